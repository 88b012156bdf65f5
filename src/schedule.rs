//! The polynomial_2 noise schedule (spec §2.1) and the coefficients of one reverse step (spec §2.8).
//!
//! γ is computed in f64 exactly as the original numpy code and stored as f32; all derived coefficients are
//! computed in f64 from the f32 γ values (never `1 − α_t²/α_s²` in f32).

/// Number of diffusion steps the model was trained with.
pub const T: usize = 1000;
/// Precision `s` of the schedule.
pub const PRECISION: f64 = 1e-5;

/// The γ table, `T + 1` entries, γ_0 ≈ −11.513 .. γ_T ≈ 11.513, strictly increasing.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub gamma: Vec<f32>,
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

fn log_sigmoid(x: f64) -> f64 {
    -softplus(-x)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Coefficients of `z_s = z_t / α_{t|s} − c_eps · ε̂ + σ · ε'` (spec §2.8).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCoefficients {
    /// `1 / α_{t|s}`
    pub inv_alpha_ts: f32,
    /// `σ²_{t|s} / α_{t|s} / σ_t`
    pub eps: f32,
    /// `σ_{t|s} · σ_s / σ_t`
    pub noise: f32,
}

/// Coefficients of the final step `x̂ = (z_0 − σ_0 ε̂) / α_0`, plus the std `σ_0 / α_0` of the added noise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FinalCoefficients {
    pub sigma0: f32,
    pub inv_alpha0: f32,
    pub noise: f32,
}

impl Default for Schedule {
    fn default() -> Self {
        Self::polynomial_2(T, PRECISION)
    }
}

impl Schedule {
    /// EDM's `polynomial_2` schedule with its clipping of step ratios at 0.001 and the precision squeeze.
    pub fn polynomial_2(t_max: usize, precision: f64) -> Self {
        let steps = t_max + 1;
        let step = steps as f64 / (steps - 1) as f64; // numpy linspace(0, steps, steps)
        let mut prev = 1.0f64;
        let mut cum = 1.0f64;
        let mut gamma = Vec::with_capacity(steps);
        for i in 0..steps {
            let x = if i == steps - 1 {
                steps as f64
            } else {
                i as f64 * step
            };
            let u = x / steps as f64;
            let a2 = (1.0 - u * u).powi(2);
            let ratio = (a2 / prev).clamp(0.001, 1.0);
            prev = a2;
            cum *= ratio;
            let alpha2 = (1.0 - 2.0 * precision) * cum + precision;
            let sigma2 = 1.0 - alpha2;
            gamma.push((-(alpha2.ln() - sigma2.ln())) as f32);
        }
        Schedule { gamma }
    }

    pub fn t_max(&self) -> usize {
        self.gamma.len() - 1
    }

    pub fn gamma(&self, t: usize) -> f64 {
        self.gamma[t] as f64
    }

    /// α_t = sqrt(sigmoid(−γ_t)).
    pub fn alpha(&self, t: usize) -> f64 {
        sigmoid(-self.gamma(t)).sqrt()
    }

    /// σ_t = sqrt(sigmoid(γ_t)).
    pub fn sigma(&self, t: usize) -> f64 {
        sigmoid(self.gamma(t)).sqrt()
    }

    /// Coefficients of p(z_s | z_t) for any s < t.
    pub fn step(&self, s: usize, t: usize) -> StepCoefficients {
        assert!(s < t && t <= self.t_max(), "step needs s < t <= T");
        let (gs, gt) = (self.gamma(s), self.gamma(t));
        let sigma2_ts = -(softplus(gs) - softplus(gt)).exp_m1();
        let alpha_ts = (0.5 * (log_sigmoid(-gt) - log_sigmoid(-gs))).exp();
        let (sigma_s, sigma_t) = (self.sigma(s), self.sigma(t));
        StepCoefficients {
            inv_alpha_ts: (1.0 / alpha_ts) as f32,
            eps: (sigma2_ts / alpha_ts / sigma_t) as f32,
            noise: (sigma2_ts.sqrt() * sigma_s / sigma_t) as f32,
        }
    }

    /// Coefficients of p(x, h | z_0).
    pub fn final_step(&self) -> FinalCoefficients {
        let g0 = self.gamma(0);
        FinalCoefficients {
            sigma0: self.sigma(0) as f32,
            inv_alpha0: (1.0 / self.alpha(0)) as f32,
            noise: (0.5 * g0).exp() as f32,
        }
    }

    /// The `steps + 1` timesteps of a respaced chain, from T down to 0 (`steps` = T gives T, T−1, …, 0).
    pub fn timesteps(&self, steps: usize) -> Vec<usize> {
        let t_max = self.t_max();
        (0..=steps)
            .rev()
            .map(|k| (k * t_max + steps / 2) / steps)
            .collect()
    }
}
