"""EDM's QM9 denoiser (EGNN) and noise schedule in PyTorch, written from ../shared/edm-spec.md.

Module and parameter names reproduce the state-dict names of spec §1.7 exactly
(`dynamics.egnn.e_block_{i}.gcl_0.edge_mlp.0.weight`, ...), so exported weights load unchanged in the Rust crate
and in the original code.

Speed: molecules are processed in dense batches of equal atom count `[B, n, ...]` (no padding, no masks: spec §5.12
says padding never changes the result). The first layer of the edge and coordinate MLPs is split per node,
W·[h_i ‖ h_j ‖ a_ij] + b = (A·h_i + b) + B·h_j + W_a·a_ij, which computes the 2nf-wide product once per node instead of
once per edge.
"""
import json
import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

ATOM_TYPES = ["H", "C", "N", "O", "F"]
CHARGES = [1, 6, 7, 8, 9]
COORDS_RANGE = 15.0
NORM_CONSTANT = 1.0
# Node-count histogram of QM9's training split (spec §3); sums to 100,000.
N_NODES_HISTOGRAM = {
    3: 1, 4: 4, 5: 5, 6: 9, 7: 16, 8: 49, 9: 124, 10: 362, 11: 807, 12: 1689, 13: 3060, 14: 5136, 15: 7796,
    16: 10644, 17: 13025, 18: 13364, 19: 13832, 20: 9482, 21: 9970, 22: 3393, 23: 4848, 24: 539, 25: 1506,
    26: 48, 27: 266, 29: 25,
}


def polynomial_2_gamma(T=1000, precision=1e-5, power=2.0):
    """γ table of spec §2.1 (float64 numpy, returned as float32 [T+1])."""
    steps = T + 1
    u = np.linspace(0, steps, steps) / steps
    a2 = (1 - np.power(u, power)) ** 2
    a2 = np.concatenate([np.ones(1), a2])
    ratio = np.clip(a2[1:] / a2[:-1], a_min=0.001, a_max=1.0)
    a2 = np.cumprod(ratio)
    a2 = (1 - 2 * precision) * a2 + precision
    s2 = 1 - a2
    return (-(np.log(a2) - np.log(s2))).astype(np.float32)


class GCL(nn.Module):
    def __init__(self, nf):
        super().__init__()
        self.nf = nf
        self.edge_mlp = nn.Sequential(nn.Linear(2 * nf + 2, nf), nn.SiLU(), nn.Linear(nf, nf), nn.SiLU())
        self.node_mlp = nn.Sequential(nn.Linear(2 * nf, nf), nn.SiLU(), nn.Linear(nf, nf))
        self.att_mlp = nn.Sequential(nn.Linear(nf, 1), nn.Sigmoid())

    def forward(self, h, a, offdiag):
        """h [B,n,nf], a [B,n,n,2] (r, d0), offdiag [n,n] -> h [B,n,nf]."""
        pre = first_layer(self.edge_mlp[0], h, a, self.nf)
        m = F.silu(self.edge_mlp[2](F.silu(pre)))  # [B,n,n,nf]
        gate = torch.sigmoid(self.att_mlp[0](m))  # [B,n,n,1]
        agg = (m * (gate * offdiag[..., None])).sum(dim=2)  # [B,n,nf], sum over j
        w1 = self.node_mlp[0]
        out = self.node_mlp[2](F.silu(w1(torch.cat([h, agg.to(h.dtype)], dim=-1))))
        return h + out.to(h.dtype)  # keep the residual stream in float32 under bf16 autocast


class EquivariantUpdate(nn.Module):
    def __init__(self, nf):
        super().__init__()
        self.nf = nf
        last = nn.Linear(nf, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coord_mlp = nn.Sequential(nn.Linear(2 * nf + 2, nf), nn.SiLU(), nn.Linear(nf, nf), nn.SiLU(), last)

    def forward(self, h, x, delta, a):
        """x [B,n,3], delta [B,n,n,3] -> x [B,n,3]. delta_ii = 0, so self pairs add nothing."""
        pre = first_layer(self.coord_mlp[0], h, a, self.nf)
        phi = self.coord_mlp[4](F.silu(self.coord_mlp[2](F.silu(pre))))  # [B,n,n,1]
        trans = delta * (torch.tanh(phi.to(delta.dtype)) * COORDS_RANGE)
        return x + trans.sum(dim=2)


def first_layer(lin, h, a, nf):
    """lin: Linear(2nf+2 -> nf). Returns lin([h_i ‖ h_j ‖ a_ij]) as [B,n,n,nf] via the per-node split."""
    w, b = lin.weight, lin.bias
    hi = F.linear(h, w[:, :nf], b)  # [B,n,nf]
    hj = F.linear(h, w[:, nf:2 * nf])  # [B,n,nf]
    ea = F.linear(a, w[:, 2 * nf:])  # [B,n,n,nf]
    return hi[:, :, None, :] + hj[:, None, :, :] + ea


class EquivariantBlock(nn.Module):
    def __init__(self, nf):
        super().__init__()
        self.gcl_0 = GCL(nf)
        self.gcl_equiv = EquivariantUpdate(nf)

    def forward(self, h, x, d0, offdiag):
        diff = x[:, :, None, :] - x[:, None, :, :]  # [B,n,n,3]
        r = (diff * diff).sum(-1)  # squared distance
        delta = diff / (torch.sqrt(r + 1e-8) + NORM_CONSTANT)[..., None]
        a = torch.stack([r, d0], dim=-1)
        h = self.gcl_0(h, a, offdiag)
        x = self.gcl_equiv(h, x, delta, a)
        return h, x


class EGNN(nn.Module):
    def __init__(self, nf, n_layers, in_nf=7):
        super().__init__()
        self.embedding = nn.Linear(in_nf, nf)
        for i in range(n_layers):
            self.add_module(f"e_block_{i}", EquivariantBlock(nf))
        self.embedding_out = nn.Linear(nf, in_nf)
        self.n_layers = n_layers

    def forward(self, h, x):
        n = x.shape[1]
        offdiag = 1.0 - torch.eye(n, device=x.device, dtype=torch.float32)
        diff = x[:, :, None, :] - x[:, None, :, :]
        d0 = (diff * diff).sum(-1)
        h = self.embedding(h).to(x.dtype)
        for i in range(self.n_layers):
            h, x = self._modules[f"e_block_{i}"](h, x, d0, offdiag)
        return self.embedding_out(h), x


class Dynamics(nn.Module):
    """ε̂ = φ(z_t, t) of spec §1.3 for a dense batch z [B,n,9], t [B] (normalised time)."""

    def __init__(self, nf, n_layers):
        super().__init__()
        self.egnn = EGNN(nf, n_layers)

    def forward(self, z, t):
        x = z[..., :3]
        h = torch.cat([z[..., 3:], t[:, None, None].expand(-1, z.shape[1], 1)], dim=-1)
        h_out, x_out = self.egnn(h, x)
        vel = x_out.to(x.dtype) - x
        bad = ~torch.isfinite(vel).all()
        vel = torch.where(bad, torch.zeros_like(vel), vel)  # spec §1.3 step 6, without a host sync
        vel = vel - vel.mean(dim=1, keepdim=True)
        return torch.cat([vel, h_out[..., :6].to(x.dtype)], dim=-1)


class GammaTable(nn.Module):
    def __init__(self, T):
        super().__init__()
        self.gamma = nn.Parameter(torch.from_numpy(polynomial_2_gamma(T)), requires_grad=False)


class EnVariationalDiffusion(nn.Module):
    """Container whose state dict is exactly spec §1.7 (`buffer`, `gamma.gamma`, `dynamics.egnn.*`)."""

    def __init__(self, nf=256, n_layers=9, T=1000):
        super().__init__()
        self.register_buffer("buffer", torch.zeros(1))
        self.gamma = GammaTable(T)
        self.dynamics = Dynamics(nf, n_layers)
        self.nf, self.n_layers, self.T = nf, n_layers, T

    def forward(self, z, t):
        return self.dynamics(z, t)


def features(types):
    """types long [B,n] -> h [B,n,6] = (one-hot/4, atomic number/10), spec §2.2."""
    onehot = F.one_hot(types, 5).float()
    charge = torch.tensor(CHARGES, dtype=torch.float32, device=types.device)[types]
    return torch.cat([onehot / 4.0, (charge / 10.0)[..., None]], dim=-1)


def mean_free_noise(B, n, device, generator=None):
    """ε [B,n,9]: x part projected to zero centre of mass (spec §2.3)."""
    eps = torch.randn(B, n, 9, device=device, generator=generator)
    x = eps[..., :3] - eps[..., :3].mean(dim=1, keepdim=True)
    return torch.cat([x, eps[..., 3:]], dim=-1)


def config(nf, n_layers, T=1000, provenance=None):
    """The `equivariant` metadata entry the crate reads: the model's configuration and the file's provenance."""
    return {
        "format": "equivariant-edm/1",
        "model": "egnn_dynamics",
        "nf": nf,
        "n_layers": n_layers,
        "inv_sublayers": 1,
        "attention": True,
        "tanh": True,
        "coords_range": COORDS_RANGE,
        "norm_constant": NORM_CONSTANT,
        "normalization_factor": 1.0,
        "aggregation": "sum",
        "diffusion_steps": T,
        "noise_schedule": "polynomial_2",
        "noise_precision": 1e-5,
        "normalize_factors": [1.0, 4.0, 10.0],
        "atom_types": ATOM_TYPES,
        "charges": CHARGES,
        "n_nodes_histogram": {str(k): v for k, v in N_NODES_HISTOGRAM.items()},
        "provenance": provenance or {},
    }


def metadata(cfg):
    """safetensors metadata holding cfg as strict JSON (the crate reads no NaN or infinity)."""
    return {"equivariant": json.dumps(cfg, sort_keys=True, allow_nan=False)}


def config_metadata(nf, n_layers, T=1000, provenance=None):
    return metadata(config(nf, n_layers, T, provenance))


def count_params(model):
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("gamma."))


def _sanity():
    g = polynomial_2_gamma()
    assert abs(g[500] - (-0.25130935)) < 1e-5 and abs(g[1000] - 11.51251595) < 1e-4, (g[500], g[1000])
    m = EnVariationalDiffusion(256, 9)
    assert count_params(m) == 5_339_920, count_params(m)
    assert len(m.state_dict()) == 141
    print("ok", math.isfinite(float(g.sum())))


if __name__ == "__main__":
    _sanity()
