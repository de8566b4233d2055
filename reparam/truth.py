"""Ground truths G* and the nested (X, Y) streams drawn from them.

Canonical truths (d = 2 inputs, m = 1 output, r = 2 latent dims, N = 2 pretrained experts, L* = 2 prompts).
All values are written out below and in README.md, so a reader can re-derive every number:

    pretrained experts   A_1 = [[0.5, 0.2], [0.2, -0.3]],  a_1 =  0.0,  H_1 = [[ 1.0], [-0.5]]
                         A_2 = [[-0.4, 0.1], [0.1, 0.6]],  a_2 = -0.5,  H_2 = [[-0.7], [ 0.8]]
    fixed tie maps       W_K = [[1.2, -0.4], [0.5, 1.0]],  W_V = [[0.9, -1.1]]
    latent prompts       p*_1 = ( 0.8, -0.6),  p*_2 = (-0.7, 0.9)
    biases               b*_1 = 0.5,  b*_2 = 0.3
    noise                sigma = 0.1;  X ~ Uniform[-1, 1]^2

    shared_mlp      k*_i = tanh(W_K p*_i), v*_i = tanh(W_V p*_i)
    shared_linear   k*_i = W_K p*_i,       v*_i = W_V p*_i           (its own regression function)
    independent     (k*_i, v*_i) = the shared_mlp prefix              (the SAME f* as shared_mlp)
    shared_learned  W1 = [W_K; W_V], c1 = 0, W2 = I_3, c2 = 0         (the SAME f* as shared_mlp)

So independent, shared_mlp and shared_learned estimate one and the same regression function: only the
estimator's parameterisation differs, which is exactly the comparison the theory makes.
The exact- and over-specified regimes share the truth and differ in the number of fitted atoms
(L' = L* = 2, or L' = 3).

Latent dimension r > d (`canonical_truth(..., latent_dim=3)`, THEORY section 7): the key map of the
shared structures is then NOT injective. The third latent coordinate gets the key column
W_K (0.5, 0.5)^T = (0.4, 0.75)^T (so z = (0.5, 0.5, -1) spans the null space of W_K) and the value entry 0.7
(so W_V z = -0.8 != 0), and p*_i gets a third coordinate 0: the true prefix, hence f*, is exactly the r = 2
one. Only the fitted parameterisation changes; the truth is named "canonical-r3".

Random truths follow the same recipe with every number drawn from a seed, rejecting draws whose true
prefix atoms are closer than `min_separation` (THEORY's atoms must be distinct).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .moe import DTYPE, PretrainedExperts, prefix_moe
from .structures import Structure, build_structure
from .validation import check_int, check_number, require

BLOCK_SIZE = 4096  # data come in fixed blocks so that the sample at n never depends on the largest n
EVAL_SEED = 987_654_321

CANONICAL = dict(
    A=[[[0.5, 0.2], [0.2, -0.3]], [[-0.4, 0.1], [0.1, 0.6]]],
    a=[0.0, -0.5],
    H=[[[1.0], [-0.5]], [[-0.7], [0.8]]],
    W_K=[[1.2, -0.4], [0.5, 1.0]],
    W_V=[[0.9, -1.1]],
    p=[[0.8, -0.6], [-0.7, 0.9]],
    b=[0.5, 0.3],
    noise=0.1,
)


@dataclass
class GroundTruth:
    """A fully specified data-generating process.

    Fields:
        name: label written into every result row (e.g. "canonical", "random-7").
        structure: the parameterisation the truth is written in (holds the fixed W_K, W_V).
        experts: the known pretrained head.
        theta: (P*,) native parameters of the L* true prompts, laid out as Structure.split expects.
        n_atoms: L*.
        noise: sigma >= 0 of the Gaussian noise on Y.
        x_scale: X ~ Uniform[-x_scale, x_scale]^d.
    """

    name: str
    structure: Structure
    experts: PretrainedExperts
    theta: Tensor
    n_atoms: int
    noise: float = 0.1
    x_scale: float = 1.0

    def __post_init__(self):
        """ConfigError (a ValueError; reparam.validation) naming the field, the value and what is allowed."""
        check_number("noise", self.noise, low=0)
        check_number("x_scale", self.x_scale, low=0, low_open=True)
        check_int("n_atoms", self.n_atoms, low=1)
        dims = (self.experts.input_dim, self.experts.output_dim)
        require(dims == (self.structure.d, self.structure.m), "experts", dims,
                f"(input_dim, output_dim) = the structure's (d, m) = ({self.structure.d}, {self.structure.m})")
        self.theta = torch.as_tensor(self.theta, dtype=DTYPE)
        self.structure.split(self.theta, self.n_atoms)  # raises on a wrong length

    @property
    def d(self) -> int:
        return self.structure.d

    @property
    def m(self) -> int:
        return self.structure.m

    def prefix(self) -> tuple[Tensor, Tensor, Tensor]:
        """True keys (L*, d), values (L*, m), biases (L*,)."""
        return self.structure.prefix(self.theta, self.n_atoms)

    def regression(self, X: Tensor) -> Tensor:
        """f_{G*}(X): (..., n, m)."""
        keys, values, biases = self.prefix()
        return prefix_moe(X, self.experts, keys, values, biases)

    def sample(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """The first n points of the stream `seed`: X (n, d), Y (n, m). Nested in n by construction."""
        if int(n) != n or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n}")
        n = int(n)
        X, eps = [], []
        for block in range(-(-n // BLOCK_SIZE)):
            rng = np.random.default_rng([int(seed), block])
            X.append(rng.uniform(-self.x_scale, self.x_scale, size=(BLOCK_SIZE, self.d)))
            eps.append(rng.standard_normal(size=(BLOCK_SIZE, self.m)))
        X = torch.as_tensor(np.concatenate(X)[:n], dtype=DTYPE)
        eps = torch.as_tensor(np.concatenate(eps)[:n], dtype=DTYPE)
        return X, self.regression(X) + self.noise * eps

    def sample_replicates(self, n: int, seeds: list[int]) -> tuple[Tensor, Tensor]:
        """Stacked streams: X (R, n, d), Y (R, n, m)."""
        pairs = [self.sample(n, s) for s in seeds]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def eval_inputs(self, n_eval: int) -> Tensor:
        """A fresh sample for L2 errors, independent of every training stream."""
        rng = np.random.default_rng(EVAL_SEED)
        return torch.as_tensor(rng.uniform(-self.x_scale, self.x_scale, size=(int(n_eval), self.d)), dtype=DTYPE)


def _latent_truth_theta(structure: Structure, p: np.ndarray, b: np.ndarray, W_K: np.ndarray, W_V: np.ndarray) -> Tensor:
    """Native parameters of `structure` for the latent truth (p, b, W_K, W_V): the structure's own recipe,
    Structure.truth_theta (shared_mlp, independent, shared_learned: the tanh-tied f*; shared_linear: its own)."""
    def as_t(x):
        return torch.as_tensor(np.asarray(x, dtype=float), dtype=DTYPE)
    try:
        return structure.truth_theta(as_t(b), as_t(p), as_t(W_K), as_t(W_V))
    except NotImplementedError as err:
        raise ValueError(f"no truth recipe for structure={structure.name!r}: {err}") from None


def _structure_for_truth(structure: str, d: int, m: int, W_K, W_V, activation: str, hidden: int | None) -> Structure:
    return build_structure(
        structure, d, m, r=np.shape(W_K)[1], W_K=W_K, W_V=W_V, activation=activation,
        hidden=hidden if hidden is not None else d + m,
    )


LATENT_EXTRA = dict(W_K_mix=[0.5, 0.5], W_V=0.7)  # the third latent coordinate of latent_dim=3 (module docstring)


def canonical_truth(structure: str, activation: str = "tanh", noise: float | None = None,
                    latent_dim: int = 2) -> GroundTruth:
    """The documented canonical truth for `structure` (see the module docstring).

    A shared_mlp with another `activation` keeps p*, W_K, W_V and so has its own regression function.
    latent_dim: r = 2 (W_K of full column rank: injective key map) or 3 (r > d = 2: W_K has the null direction
    z = (0.5, 0.5, -1); same true prefix and f*, named "canonical-r3")."""
    if latent_dim not in (2, 3):
        raise ValueError(f"latent_dim={latent_dim!r} is invalid: must be 2 or 3")
    c = CANONICAL
    W_K, W_V, p = np.array(c["W_K"]), np.array(c["W_V"]), np.array(c["p"])
    if latent_dim == 3:
        W_K = np.concatenate([W_K, W_K @ np.array(LATENT_EXTRA["W_K_mix"])[:, None]], axis=1)  # (2, 3), rank 2
        W_V = np.concatenate([W_V, [[LATENT_EXTRA["W_V"]]]], axis=1)  # (1, 3)
        p = np.concatenate([p, np.zeros((len(p), 1))], axis=1)  # same prefix as r = 2
    s = _structure_for_truth(structure, 2, 1, W_K, W_V, activation, None)
    theta = _latent_truth_theta(s, p, np.array(c["b"]), W_K, W_V)
    experts = PretrainedExperts(A=c["A"], a=c["a"], H=c["H"])
    return GroundTruth(name="canonical" if latent_dim == 2 else f"canonical-r{latent_dim}", structure=s,
                       experts=experts, theta=theta, n_atoms=2, noise=c["noise"] if noise is None else noise)


def random_truth(
    structure: str,
    seed: int,
    d: int = 2,
    m: int = 1,
    r: int = 2,
    n_atoms: int = 2,
    n_experts: int = 2,
    noise: float = 0.1,
    latent_scale: float = 1.2,
    bias_range: tuple[float, float] = (-0.5, 0.8),
    min_separation: float = 0.5,
    activation: str = "tanh",
    max_tries: int = 1000,
) -> GroundTruth:
    """A random truth from `seed`: random head, tie maps W (entries N(0, 1/r)), latent atoms uniform in
    [-latent_scale, latent_scale]^r, biases uniform in `bias_range` (bounded weights), true prefix atoms
    at least `min_separation` apart (Euclidean, in (k, v) space)."""
    if min_separation < 0:
        raise ValueError(f"min_separation must be >= 0, got {min_separation}")
    rng = np.random.default_rng([int(seed), 7])
    experts = PretrainedExperts.random(d, m, n_experts, seed=int(rng.integers(2**31)))
    for _ in range(max_tries):
        W_K = rng.normal(0, 1 / np.sqrt(r), size=(d, r)) * 1.5
        W_V = rng.normal(0, 1 / np.sqrt(r), size=(m, r)) * 1.5
        p = rng.uniform(-latent_scale, latent_scale, size=(n_atoms, r))
        b = rng.uniform(*bias_range, size=n_atoms)
        s = _structure_for_truth(structure, d, m, W_K, W_V, activation, None)
        theta = _latent_truth_theta(s, p, b, W_K, W_V)
        keys, values, _ = s.prefix(theta, n_atoms)  # the TRUE prefix atoms, whatever the structure's recipe
        kv = torch.cat([keys, values], dim=-1).numpy()
        gaps = [np.linalg.norm(kv[i] - kv[j]) for i in range(n_atoms) for j in range(i + 1, n_atoms)]
        if not gaps or min(gaps) >= min_separation:
            break
    else:
        raise ValueError(f"no truth with min_separation={min_separation} found in {max_tries} draws")
    return GroundTruth(name=f"random-{seed}", structure=s, experts=experts, theta=theta, n_atoms=n_atoms, noise=noise)


def make_truth(kind: str, structure: str, seed: int = 0, activation: str = "tanh", noise: float | None = None,
               **random_settings) -> GroundTruth:
    """`kind` is 'canonical' or 'random'."""
    if kind == "canonical":
        return canonical_truth(structure, activation=activation, noise=noise)
    if kind == "random":
        return random_truth(structure, seed, activation=activation, noise=0.1 if noise is None else noise, **random_settings)
    raise ValueError(f"truth={kind!r} is unknown; choose 'canonical' or 'random'")
