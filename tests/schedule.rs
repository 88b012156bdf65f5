//! The polynomial_2 γ table and the reverse-step coefficients against the reference values of spec §2.1/§2.8.
use equivariant::schedule::{Schedule, T};

#[test]
fn gamma_table_matches_reference() {
    let s = Schedule::default();
    assert_eq!(s.gamma.len(), T + 1);
    let reference = [
        (0usize, -11.51291546f64, 0.99999500f64, 0.00316228f64),
        (1, -11.33059532, 0.99999400, 0.00346410),
        (2, -10.92513058, 0.99999100, 0.00424262),
        (10, -8.46825969, 0.99989500, 0.01449089),
        (100, -3.89644268, 0.98999515, 0.14110139),
        (250, -1.98204200, 0.93749596, 0.34799616),
        (500, -0.25130935, 0.74999917, 0.66143877),
        (750, 1.44085862, 0.43750705, 0.89921498),
        (900, 3.28442809, 0.19002441, 0.98177937),
        (990, 7.80874619, 0.02014949, 0.99979698),
        (999, 11.17673063, 0.00374111, 0.99999300),
        (1000, 11.51251595, 0.00316291, 0.99999500),
    ];
    for (i, g, a, sg) in reference {
        assert!(
            (s.gamma(i) - g).abs() < 2e-6 * g.abs().max(1.0),
            "γ_{i} = {} vs {g}",
            s.gamma(i)
        );
        assert!(
            (s.alpha(i) - a).abs() < 1e-6,
            "α_{i} = {} vs {a}",
            s.alpha(i)
        );
        assert!(
            (s.sigma(i) - sg).abs() < 2e-6,
            "σ_{i} = {} vs {sg}",
            s.sigma(i)
        );
    }
    assert!(
        s.gamma.windows(2).all(|w| w[1] > w[0]),
        "γ must increase strictly"
    );
}

#[test]
fn step_coefficients_match_reference() {
    let s = Schedule::default();
    // (s, t, σ²_{t|s}, 1/α_{t|s}, ε coefficient, noise std) from spec §2.8
    let reference = [
        (
            0usize,
            1usize,
            2.0000e-6f64,
            1.000001f64,
            5.7735e-4f64,
            1.29099e-3f64,
        ),
        (499, 500, 2.65864e-3, 1.001332, 4.0248e-3, 5.1474e-2),
        (998, 999, 0.461026, 1.362122, 0.627978, 0.678985),
        (999, 1000, 0.285221, 1.182807, 0.337363, 0.534059),
    ];
    for (a, b, _s2, inv_alpha, eps, noise) in reference {
        let c = s.step(a, b);
        let close = |x: f32, y: f64, what: &str| {
            assert!(
                ((x as f64) - y).abs() <= 2e-4 * y.abs(),
                "({a},{b}) {what}: {x} vs {y}"
            );
        };
        close(c.inv_alpha_ts, inv_alpha, "1/α_t|s");
        close(c.eps, eps, "ε coefficient");
        close(c.noise, noise, "noise std");
    }
    let f = s.final_step();
    assert!(
        (f.noise as f64 - 3.16229e-3).abs() < 1e-8,
        "σ_0/α_0 = {}",
        f.noise
    );
}

#[test]
fn one_ancestral_step_by_hand() {
    // z_s = z_t/α_{t|s} − σ²_{t|s}/(α_{t|s} σ_t)·ε̂ + σ_{t|s} σ_s/σ_t·ε', computed from γ directly
    let s = Schedule::default();
    let (sv, tv) = (499usize, 500usize);
    let (gs, gt) = (s.gamma(sv), s.gamma(tv));
    let sig = |g: f64| 1.0 / (1.0 + (-g).exp());
    let (a2s, a2t) = (sig(-gs), sig(-gt));
    let alpha_ts = (a2t / a2s).sqrt();
    let sigma2_ts = 1.0 - a2t / a2s; // f64 is precise enough here
    let (sigma_s, sigma_t) = (sig(gs).sqrt(), sig(gt).sqrt());
    let (z, eps, noise) = (0.7f64, -0.4f64, 1.3f64);
    let want = z / alpha_ts - sigma2_ts / alpha_ts / sigma_t * eps
        + sigma2_ts.sqrt() * sigma_s / sigma_t * noise;
    let c = s.step(sv, tv);
    let got = z as f32 * c.inv_alpha_ts - c.eps * eps as f32 + c.noise * noise as f32;
    assert!((got as f64 - want).abs() < 1e-6, "{got} vs {want}");
}

#[test]
fn respaced_timesteps() {
    let s = Schedule::default();
    assert_eq!(s.timesteps(1000).len(), 1001);
    assert_eq!(&s.timesteps(4), &[1000, 750, 500, 250, 0]);
    let ts = s.timesteps(300);
    assert_eq!((ts[0], *ts.last().unwrap(), ts.len()), (1000, 0, 301));
    assert!(ts.windows(2).all(|w| w[0] > w[1]));
}
