//! The wgpu device: adapter choice, WebGPU default limits, and errors the caller can act on (no adapter, device
//! lost, validation) instead of wgpu's default panic.

use std::sync::{Arc, Mutex};

use crate::{Error, Result};

/// What went wrong on the device after creation, recorded by wgpu's callbacks and reported by the next call.
#[derive(Default)]
struct Faults {
    lost: Option<String>,
    error: Option<String>,
}

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// "name (backend, device type)" of the adapter in use.
    pub adapter: String,
    /// A software rasteriser (lavapipe, SwiftShader, WARP): correct, but slower than the CPU path.
    pub software: bool,
    faults: Arc<Mutex<Faults>>,
}

impl GpuContext {
    /// Opens the first high-performance adapter with WebGPU's default limits (what every browser grants), so that
    /// what runs here also runs in a browser.
    pub async fn new_async() -> Result<Self> {
        let instance = wgpu::Instance::default();
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let parts: Vec<&str> = [
            info.name.as_str(),
            info.driver.as_str(),
            info.driver_info.as_str(),
        ]
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
        let title = if parts.is_empty() {
            "unnamed adapter".to_string()
        } else {
            parts.join(", ")
        };
        let name = format!("{title} ({:?}, {:?})", info.backend, info.device_type);
        let lower = format!("{} {} {}", info.name, info.driver, info.driver_info).to_lowercase();
        let software = info.device_type == wgpu::DeviceType::Cpu
            || ["swiftshader", "llvmpipe", "lavapipe", "warp"]
                .iter()
                .any(|s| lower.contains(s));
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("equivariant"),
                required_features: wgpu::Features::empty(),
                required_limits: wgpu::Limits::default(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("{name}: could not open the device: {e}")))?;
        let faults = Arc::new(Mutex::new(Faults::default()));
        let f = faults.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut f) = f.lock() {
                f.lost = Some(format!("{reason:?}: {message}"));
            }
        });
        let f = faults.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut f) = f.lock() {
                // one line: wgpu's report spans several ("Validation Error\n\nCaused by:\n  ..."), and the
                // page shows it in a one-line label
                f.error.get_or_insert_with(|| {
                    e.to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                });
            }
        }));
        Ok(GpuContext {
            device,
            queue,
            adapter: name,
            software,
            faults,
        })
    }

    /// Blocking [`GpuContext::new_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// The first fault recorded since the device opened: a lost device, or a validation/out-of-memory error.
    pub fn check(&self) -> Result<()> {
        let f = self
            .faults
            .lock()
            .map_err(|_| Error::Gpu("fault record poisoned".into()))?;
        if let Some(l) = &f.lost {
            return Err(Error::GpuLost(l.clone()));
        }
        if let Some(e) = &f.error {
            return Err(Error::Gpu(e.clone()));
        }
        Ok(())
    }

    /// Marks the device as lost (used by tests and by callers that destroy it).
    pub fn simulate_loss(&self) {
        self.device.destroy();
        if let Ok(mut f) = self.faults.lock() {
            f.lost
                .get_or_insert_with(|| "destroyed by the caller".into());
        }
    }

    /// Makes a call the device refuses (a buffer both mappable for reading and a storage binding, which WebGPU
    /// forbids), as a driver or shader bug would: the device stays usable, and the next call that checks reports
    /// [`Error::Gpu`] naming the "simulated failure" buffer. Lets tests follow the path of a failed GPU call.
    pub fn simulate_error(&self) {
        let _refused = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("simulated failure"),
            size: 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
    }

    /// Waits until submitted work is done (native) — a no-op in the browser, which polls by itself.
    pub fn wait(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        self.check()
    }
}
