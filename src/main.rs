//! `equivariant`: the native command line (sample, eval, convert, denoise, bench).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use equivariant::chemistry::{formula, StabilityReport};
use equivariant::egnn::Egnn;
use equivariant::export::{parse_xyz, to_sdf, to_xyz};
use equivariant::sampler::{AtomCounts, Sampler, SamplerConfig};
use equivariant::weights::{Precision, Weights};
use equivariant::{Error, Result};

/// Default weights, relative to the working directory or to the source tree.
const DEFAULT_WEIGHTS: &str = "weights/edm_qm9_9x128.safetensors";

#[derive(Parser)]
#[command(
    name = "equivariant",
    version,
    about = "EDM molecule generator (E(3)-equivariant diffusion, EGNN)"
)]
struct Cli {
    /// Threads for the CPU matmuls (default: all cores)
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Backend {
    /// candle-core on the CPU
    Cpu,
    /// WGSL compute shaders through wgpu (Vulkan, Metal, DX12; lavapipe where there is no GPU)
    Gpu,
}

/// The model on the chosen backend, loaded once and reused for every chunk.
enum Engine {
    Cpu(Option<Egnn>),
    Gpu(std::rc::Rc<equivariant::gpu::GpuModel>),
}

impl Engine {
    fn new(backend: Backend, w: &Weights) -> Result<Self> {
        Ok(match backend {
            Backend::Cpu => Engine::Cpu(Some(Egnn::new(w)?)),
            Backend::Gpu => {
                let ctx = equivariant::gpu::GpuContext::new()?;
                eprintln!("GPU: {}", ctx.adapter);
                Engine::Gpu(std::rc::Rc::new(equivariant::gpu::GpuModel::new(
                    std::rc::Rc::new(ctx),
                    w,
                )?))
            }
        })
    }

    /// Runs one sampling chunk, calling `tick(k)` after every k network evaluations.
    fn sample(
        &mut self,
        config: SamplerConfig,
        mut tick: impl FnMut(u64),
    ) -> Result<Vec<equivariant::sampler::Molecule>> {
        match self {
            Engine::Cpu(slot) => {
                let mut s = Sampler::new(slot.take().expect("model"), config)?;
                while !s.is_finished() {
                    if let Err(e) = s.step() {
                        *slot = Some(s.into_denoiser());
                        return Err(e);
                    }
                    tick(1);
                }
                let mols = s.molecules().unwrap_or_default().to_vec();
                *slot = Some(s.into_denoiser());
                Ok(mols)
            }
            Engine::Gpu(model) => {
                let mut s = equivariant::gpu::GpuSampler::new(model.clone(), config)?;
                while !s.is_finished() {
                    let before = s.steps_done();
                    pollster::block_on(s.advance(20))?;
                    model.ctx.wait()?;
                    tick((s.steps_done() - before) as u64);
                }
                Ok(s.molecules().unwrap_or_default().to_vec())
            }
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Generate molecules and write them as XYZ or SDF
    Sample {
        /// Number of molecules
        #[arg(long, default_value_t = 100)]
        n: usize,
        /// Atoms per molecule (1-29); default: drawn from QM9's size distribution
        #[arg(long)]
        atoms: Option<usize>,
        /// Denoising steps (1-1000)
        #[arg(long, default_value_t = 1000)]
        steps: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Weights (safetensors)
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Molecules evaluated together
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// CPU backend: batches sampled at once, one per thread (each with one matmul thread unless
        /// --threads is given); the molecules are the same as with --jobs 1
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
        /// Output file: .xyz or .sdf
        #[arg(long)]
        out: PathBuf,
    },
    /// Atom and molecule stability of molecules in an XYZ file (EDM protocol)
    Eval {
        file: PathBuf,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Convert EDM's PyTorch checkpoint (generative_model_ema.npy) to safetensors, or re-store a safetensors
    /// file (e.g. the shipped weights as float16; configuration and provenance are kept)
    Convert {
        input: PathBuf,
        output: PathBuf,
        /// Store as float16 (half the size)
        #[arg(long)]
        f16: bool,
    },
    /// One network evaluation from JSON, for cross-checking implementations
    Denoise {
        #[arg(long)]
        weights: Option<PathBuf>,
        /// {"molecules": [{"t": 0.5, "z": [[x, y, z, onehot/4 x5, Z/10], ...]}]}
        #[arg(long)]
        input: PathBuf,
    },
    /// Print the built-in self-test sample (what the browser page shows; equal text = equal molecules)
    Selftest,
    /// Time network evaluations and denoising steps
    Bench {
        /// Weights; default: random weights of --nf x --layers
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long, default_value_t = 256)]
        nf: usize,
        #[arg(long, default_value_t = 9)]
        layers: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        batch: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "9,19,29")]
        atoms: Vec<usize>,
        /// Minimum seconds per measurement
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
    },
}

fn resolve_weights(path: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = path {
        return Ok(p);
    }
    let candidates = [
        PathBuf::from(DEFAULT_WEIGHTS),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_WEIGHTS),
    ];
    candidates.iter().find(|p| p.exists()).cloned().ok_or_else(|| {
        Error::Input(format!(
            "no weights found at {DEFAULT_WEIGHTS}; pass --weights PATH (train with training/train.py or convert EDM's checkpoint)"
        ))
    })
}

fn load_weights(path: &Path) -> Result<Weights> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Input(format!("cannot read weights {}: {e}", path.display())))?;
    Weights::from_bytes(&bytes).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
}

/// Writes via a temporary file and a rename, so an interrupted run leaves no half-written output.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.partial"));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

#[derive(PartialEq)]
enum Format {
    Xyz,
    Sdf,
}

fn output_format(path: &Path) -> Result<Format> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("xyz") => Ok(Format::Xyz),
        Some("sdf") | Some("mol") => Ok(Format::Sdf),
        _ => Err(Error::Input(format!(
            "unknown output type for {}: use a .xyz or .sdf file name",
            path.display()
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
fn sample(
    n: usize,
    atoms: Option<usize>,
    steps: usize,
    seed: u64,
    weights: Option<PathBuf>,
    batch: usize,
    jobs: usize,
    backend: Backend,
    out: PathBuf,
) -> Result<()> {
    let format = output_format(&out)?;
    if n == 0 {
        return Err(Error::Input("--n must be at least 1".into()));
    }
    if let Some(a) = atoms {
        if a == 0 || a > equivariant::qm9::MAX_ATOMS {
            return Err(Error::AtomCount(a));
        }
    }
    if steps == 0 || steps > equivariant::schedule::T {
        return Err(Error::Steps(steps));
    }
    let path = resolve_weights(weights)?;
    let w = load_weights(&path)?;
    let batch = batch.max(1);
    let chunks = n.div_ceil(batch);
    let bar = indicatif::ProgressBar::new((chunks * (steps + 1)) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} steps  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut text = String::new();
    let mut report = StabilityReport::default();
    let mut failed = 0;
    // Each chunk uses its own sub-seed so that --batch does not change which molecules a seed gives
    // only through the molecule index: molecule k of the run is molecule k of seed (seed, k / batch).
    let chunk_config = |c: usize| SamplerConfig {
        molecules: batch.min(n - c * batch),
        atoms: atoms
            .map(AtomCounts::Fixed)
            .unwrap_or(AtomCounts::Histogram),
        steps,
        seed: seed.wrapping_add((c as u64) << 32),
        histogram: w.config.histogram(),
        ..Default::default()
    };
    let jobs = jobs.clamp(1, chunks);
    let results: Vec<Vec<equivariant::sampler::Molecule>> = if backend == Backend::Cpu && jobs > 1 {
        sample_parallel(&w, chunks, jobs, &chunk_config, &bar)?
    } else {
        let mut engine = Engine::new(backend, &w)?;
        (0..chunks)
            .map(|c| engine.sample(chunk_config(c), |k| bar.inc(k)))
            .collect::<Result<_>>()?
    };
    for (c, mols) in results.iter().enumerate() {
        for (k, m) in mols.iter().enumerate() {
            let idx = c * batch + k;
            if m.failed {
                failed += 1;
                bar.println(format!(
                    "molecule {idx}: the chain diverged (non-finite positions); skipped"
                ));
                continue;
            }
            report.add(&m.positions, &m.types);
            let st = equivariant::chemistry::stability(&m.positions, &m.types);
            let name = format!(
                "molecule {idx} {} seed {seed} steps {steps} stable {}",
                formula(&m.types),
                st.molecule_stable()
            );
            text.push_str(&match format {
                Format::Xyz => to_xyz(&m.positions, &m.types, &name),
                Format::Sdf => to_sdf(&m.positions, &m.types, &name),
            });
        }
    }
    bar.finish_and_clear();
    write_atomic(&out, text.as_bytes())?;
    eprintln!(
        "wrote {} molecules to {} ({} diverged); atom stability {:.1} %, molecule stability {:.1} %",
        report.molecules,
        out.display(),
        failed,
        100.0 * report.atom_stability(),
        100.0 * report.molecule_stability()
    );
    Ok(())
}

/// Samples the chunks on `jobs` CPU threads, each with its own model, taking chunks in order from a shared
/// counter; chunk c's molecules depend only on its config, so the result equals the sequential one.
fn sample_parallel(
    w: &Weights,
    chunks: usize,
    jobs: usize,
    chunk_config: &(dyn Fn(usize) -> SamplerConfig + Sync),
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Vec<equivariant::sampler::Molecule>>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Vec<equivariant::sampler::Molecule>)> =
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..jobs)
                .map(|_| {
                    scope.spawn(|| -> Result<Vec<_>> {
                        let mut engine = Engine::new(Backend::Cpu, w)?;
                        let mut mine = Vec::new();
                        loop {
                            let c = next.fetch_add(1, Ordering::Relaxed);
                            if c >= chunks {
                                return Ok(mine);
                            }
                            match engine.sample(chunk_config(c), |k| bar.inc(k)) {
                                Ok(m) => mine.push((c, m)),
                                Err(e) => {
                                    // Stop the other workers at their next chunk.
                                    next.store(chunks, Ordering::Relaxed);
                                    return Err(e);
                                }
                            }
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|h| h.join().expect("sampling thread panicked"))
                .collect::<Result<Vec<_>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
    done.sort_by_key(|&(c, _)| c);
    Ok(done.into_iter().map(|(_, m)| m).collect())
}

fn eval(file: PathBuf, json: bool) -> Result<()> {
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::Input(format!("cannot read {}: {e}", file.display())))?;
    let mols = parse_xyz(&text)?;
    if mols.is_empty() {
        return Err(Error::Input(format!("{}: no molecules", file.display())));
    }
    let mut r = StabilityReport::default();
    for m in &mols {
        r.add(&m.positions, &m.types);
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "molecules": r.molecules, "stable_molecules": r.stable_molecules,
                "atoms": r.atoms, "stable_atoms": r.stable_atoms,
                "atom_stability": r.atom_stability(), "molecule_stability": r.molecule_stability(),
            })
        );
    } else {
        println!("molecules          {}", r.molecules);
        println!(
            "atom stability     {:.2} %  ({} / {} atoms)",
            100.0 * r.atom_stability(),
            r.stable_atoms,
            r.atoms
        );
        println!(
            "molecule stability {:.2} %  ({} / {} molecules)",
            100.0 * r.molecule_stability(),
            r.stable_molecules,
            r.molecules
        );
    }
    Ok(())
}

fn denoise(weights: Option<PathBuf>, input: PathBuf) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Mol {
        t: f32,
        z: Vec<Vec<f32>>,
    }
    #[derive(serde::Deserialize)]
    struct Input {
        molecules: Vec<Mol>,
    }
    let w = load_weights(&resolve_weights(weights)?)?;
    let egnn = Egnn::new(&w)?;
    let text = std::fs::read_to_string(&input)
        .map_err(|e| Error::Input(format!("cannot read {}: {e}", input.display())))?;
    let inp: Input = serde_json::from_str(&text)
        .map_err(|e| Error::Input(format!("{}: {e}", input.display())))?;
    let mut out = Vec::new();
    for (k, m) in inp.molecules.iter().enumerate() {
        let n = m.z.len();
        if n == 0 || n > equivariant::qm9::MAX_ATOMS {
            return Err(Error::Input(format!(
                "molecule {k}: {n} atoms, expected 1 to 29"
            )));
        }
        if let Some(r) = m.z.iter().position(|r| r.len() != 9) {
            return Err(Error::Input(format!(
                "molecule {k} atom {r}: a row of z has 9 numbers"
            )));
        }
        let mut z: Vec<f32> = m.z.iter().flatten().copied().collect();
        if z.iter().any(|v| !v.is_finite()) || !m.t.is_finite() {
            return Err(Error::NonFinite(format!("molecule {k} input")));
        }
        // the model expects mean-free positions (spec §2.3)
        for c in 0..3 {
            let mean: f32 = (0..n).map(|i| z[i * 9 + c]).sum::<f32>() / n as f32;
            (0..n).for_each(|i| z[i * 9 + c] -= mean);
        }
        let eps = egnn.eps(n, &z, &[m.t])?;
        out.push(serde_json::json!({"eps": eps.chunks(9).map(|r| r.to_vec()).collect::<Vec<_>>()}));
    }
    println!("{}", serde_json::json!({ "molecules": out }));
    Ok(())
}

/// Multiply-adds of one evaluation: the two nf×nf per-edge layers plus the per-node layers of every block.
fn macs(nf: usize, layers: usize, b: usize, n: usize) -> f64 {
    let edges = (b * n * n.saturating_sub(1)) as f64;
    let nodes = (b * n) as f64;
    let nf2 = (nf * nf) as f64;
    layers as f64 * (2.0 * edges * nf2 + nodes * 7.0 * nf2) + nodes * 14.0 * nf as f64
}

/// `equivariant bench`: one table for either backend. Each backend supplies a measurement of one shape (a config
/// of B molecules of n atoms) returning (ms per network evaluation, ms per denoising step).
fn bench(
    backend: Backend,
    weights: Option<PathBuf>,
    nf: usize,
    layers: usize,
    batches: Vec<usize>,
    atoms: Vec<usize>,
    seconds: f64,
) -> Result<()> {
    let w = match weights {
        Some(p) => load_weights(&p)?,
        None => Weights::random(nf, layers, 7),
    };
    let (nf, layers) = (w.config.nf, w.config.n_layers);
    let mut measure: Box<dyn FnMut(SamplerConfig) -> Result<(f64, f64)>> = match backend {
        Backend::Cpu => {
            let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
            println!("model {layers}x{nf}, backend cpu, threads {threads}");
            Box::new(cpu_measure(&w, seconds)?)
        }
        Backend::Gpu => Box::new(gpu_measure(&w, seconds)?),
    };
    println!(
        "| B | n | ms / evaluation | ms / molecule-evaluation | GFLOP/s | ms / denoising step |"
    );
    println!("|---|---|---|---|---|---|");
    for &b in &batches {
        for &n in &atoms {
            if n == 0 || n > equivariant::qm9::MAX_ATOMS || b == 0 {
                return Err(Error::Input(format!(
                    "bench: batch {b} x atoms {n} is out of range"
                )));
            }
            let config = SamplerConfig {
                molecules: b,
                atoms: AtomCounts::Fixed(n),
                steps: 1000,
                seed: 3,
                ..Default::default()
            };
            let (eval_ms, step_ms) = measure(config)?;
            let gflops = 2.0 * macs(nf, layers, b, n) / (eval_ms * 1e-3) / 1e9;
            println!(
                "| {b} | {n} | {eval_ms:.2} | {:.3} | {gflops:.1} | {step_ms:.2} |",
                eval_ms / b as f64
            );
            let _ = std::io::stdout().flush();
        }
    }
    Ok(())
}

/// CPU: evaluations repeated for `seconds`; a denoising step (evaluation + noise + update) through the sampler.
fn cpu_measure(
    w: &Weights,
    seconds: f64,
) -> Result<impl FnMut(SamplerConfig) -> Result<(f64, f64)>> {
    let mut egnn = Some(Egnn::new(w)?);
    Ok(move |config: SamplerConfig| {
        let (b, n) = (config.molecules, fixed_atoms(&config));
        let s = Sampler::new(egnn.take().expect("model"), config.clone())?;
        let z: Vec<f32> = s.state().iter().flatten().copied().collect();
        let model = s.into_denoiser();
        let t = vec![0.5f32; b];
        model.eps(n, &z, &t)?; // warm-up
        let start = Instant::now();
        let mut reps = 0;
        while start.elapsed().as_secs_f64() < seconds || reps < 2 {
            std::hint::black_box(model.eps(n, &z, &t)?);
            reps += 1;
        }
        let eval_ms = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
        let mut s = Sampler::new(model, config)?;
        let start = Instant::now();
        let mut steps = 0;
        while start.elapsed().as_secs_f64() < seconds || steps < 2 {
            s.step()?;
            steps += 1;
        }
        let step_ms = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
        egnn = Some(s.into_denoiser());
        Ok((eval_ms, step_ms))
    })
}

/// GPU: evaluations encoded back to back in one submit (no read-back), the submit grown until it takes ~1/4 of
/// the budget; a denoising step is the sampler's on-device step (evaluation + noise + update), 20 per submit.
fn gpu_measure(
    w: &Weights,
    seconds: f64,
) -> Result<impl FnMut(SamplerConfig) -> Result<(f64, f64)>> {
    use equivariant::gpu::{GpuContext, GpuEgnn, GpuModel, GpuSampler};
    use std::rc::Rc;
    let ctx = Rc::new(GpuContext::new()?);
    let (nf, layers) = (w.config.nf, w.config.n_layers);
    println!("model {layers}x{nf}, backend gpu, adapter {}", ctx.adapter);
    let model = Rc::new(GpuModel::new(ctx.clone(), w)?);
    let mut egnn = GpuEgnn::new(model.clone());
    Ok(move |config: SamplerConfig| {
        let n = fixed_atoms(&config);
        let mut s = GpuSampler::new(model.clone(), config)?;
        let z: Vec<f32> = pollster::block_on(s.state())?
            .into_iter()
            .flatten()
            .collect();
        egnn.eval_only(n, &z, 0.5, 2)?; // warm-up
        let mut evals = 1;
        let eval_ms = loop {
            let start = Instant::now();
            egnn.eval_only(n, &z, 0.5, evals)?;
            let el = start.elapsed().as_secs_f64();
            if el > seconds / 4.0 || evals >= 4096 {
                break el * 1e3 / evals as f64;
            }
            evals *= 2;
        };
        pollster::block_on(s.advance(2))?;
        ctx.wait()?;
        let start = Instant::now();
        let mut steps = 0;
        while (start.elapsed().as_secs_f64() < seconds / 4.0 || steps < 20) && steps < 900 {
            pollster::block_on(s.advance(20))?;
            ctx.wait()?;
            steps += 20;
        }
        Ok((eval_ms, start.elapsed().as_secs_f64() * 1e3 / steps as f64))
    })
}

fn fixed_atoms(config: &SamplerConfig) -> usize {
    match config.atoms {
        AtomCounts::Fixed(n) => n,
        _ => unreachable!("bench configs use a fixed atom count"),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sample {
            n,
            atoms,
            steps,
            seed,
            weights,
            batch,
            jobs,
            backend,
            out,
        } => sample(n, atoms, steps, seed, weights, batch, jobs, backend, out),
        Command::Eval { file, json } => eval(file, json),
        Command::Convert { input, output, f16 } => {
            let w = if input.extension().is_some_and(|e| e == "safetensors") {
                load_weights(&input)?
            } else {
                equivariant::convert::read_torch_checkpoint(&input)?
            };
            let bytes = w.to_bytes(if f16 { Precision::F16 } else { Precision::F32 })?;
            write_atomic(&output, &bytes)?;
            eprintln!(
                "converted {} ({}x{}, {} parameters) -> {}",
                input.display(),
                w.config.n_layers,
                w.config.nf,
                w.parameter_count(),
                output.display()
            );
            Ok(())
        }
        Command::Denoise { weights, input } => denoise(weights, input),
        Command::Selftest => {
            println!(
                "{}",
                equivariant::sampler::self_test_summary(&equivariant::sampler::self_test()?)
            );
            Ok(())
        }
        Command::Bench {
            weights,
            nf,
            layers,
            batch,
            atoms,
            seconds,
            backend,
        } => bench(backend, weights, nf, layers, batch, atoms, seconds),
    }
}

/// glibc's malloc serves large allocations (above a threshold that starts at 128 KiB and adapts as such blocks are
/// freed) with `mmap` and gives the free top of the heap back to the OS; candle allocates a new output tensor for
/// every product. Fixing the mmap threshold at 32 MiB and the trim threshold at 256 MiB makes an evaluation at
/// batch 1 about 1.5x faster (docs/benchmarks.md). Left alone when the user tunes malloc
/// (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `GLIBC_TUNABLES`) and off 64-bit glibc. Returns whether
/// both settings took effect.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
fn keep_freed_memory() -> bool {
    use std::os::raw::c_int;
    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    if user_tunes_malloc() {
        return false;
    }
    // SAFETY: mallopt only changes allocator parameters and is thread-safe. 32 MiB is glibc's largest mmap
    // threshold on 64-bit; should it be refused (1 = accepted), the trim threshold is not set either, since
    // setting it alone would freeze the mmap threshold at 128 KiB.
    unsafe { mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 256 << 20) == 1 }
}

/// Whether the environment sets glibc malloc's thresholds itself (old-style variables or `GLIBC_TUNABLES`).
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
fn user_tunes_malloc() -> bool {
    ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
fn keep_freed_memory() -> bool {
    false
}

fn main() -> ExitCode {
    let _ = keep_freed_memory(); // a speed setting: without it the CLI works the same, only slower
    let cli = Cli::parse();
    if let Some(t) = cli.threads {
        // candle's CPU matmul reads RAYON_NUM_THREADS; set before any tensor work.
        std::env::set_var("RAYON_NUM_THREADS", t.max(1).to_string());
    } else if matches!(cli.command, Command::Sample { jobs, .. } if jobs > 1) {
        // Parallel chunks already use the cores; one matmul thread each avoids oversubscription.
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// glibc takes both malloc settings: a value outside its range would be refused and the speed-up silently lost.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    fn glibc_accepts_the_malloc_settings() {
        assert_eq!(super::keep_freed_memory(), !super::user_tunes_malloc());
    }
}
