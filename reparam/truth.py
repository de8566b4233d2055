"""Ground truths G* and the nested (X, Y) streams drawn from them.

Canonical truths (d = 2 inputs, m = 1 output, r = 2 latent dims, N = 2 pretrained experts, L* = 2 prompts).
All values are written out below and in docs/reference/canonical-truths.md, so a reader can re-derive every number:

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

Head-like canonical truths (`canonical_truth(..., d=8)` or `d=16`; the study's `truth.d=8`): the same recipe at
the dimension of one attention head, every number a closed-form pattern of the indices (no seed). Indices start
at 0: inputs j, l = 0..d-1, outputs c = 0..m-1, latent coordinates a = 0..r-1, true prompts i = 0..L*-1, pretrained
experts e = 0..N-1; cas(x) = cos(x) + sin(x). Shape: d in {8, 16}; m = 4 (any 1..d); L* = 2 (1..4); N = 2 (1..4);
r = d (so a = 0..d-1 below; r = d + 1 is the variant at the end).

    pretrained experts   A_e[j, l] = (2 / d) cos(pi (e + 1) (j + l + 1) / (d + 1))       (symmetric, indefinite)
                         a_e = -0.25 e,   H_e[j, c] = cas(2 pi j (c + e m) / d) / sqrt(d)
    fixed tie maps       W_K[j, a] = cas(2 pi j a / d) / sqrt(d)           (the d x d Hartley matrix: orthogonal)
                         W_V[c, a] = sqrt(2 / d) cos(pi (2c + 1) (2a + 1) / (4 d))    (DCT-IV rows: orthonormal)
    latent prompts       p*_i[a] = 0.6 cas(pi (a + i)^2 / d)                (chirps: keys spread over all d inputs)
    biases               b*_i = 0.5 - 0.2 i                                  (0.5, 0.3 as in the d = 2 truth)
    noise                sigma = 0.1;  X ~ Uniform[-1, 1]^d

and the structures' recipes above (k*_i = tanh(W_K p*_i), v*_i = tanh(W_V p*_i), ...). W_K has orthonormal
columns, so every singular value is 1 (full column rank: an injective key map). Measured (20,000 X ~ U[-1, 1]^d,
the tanh prefix; the shared_linear prefix in brackets), at the default shape (m = 4, L* = 2, N = 2, r = d), over
the N + L* = 4 gates of the softmax:

    d = 8   true atoms 2.30 (2.93) apart in (k, v);  mean largest gate weight 0.50 (0.54), 1/4 = uniform, 1 = saturated;
            mean normalised gate entropy 0.83 (0.79); mean weight of each gate 0.16 .. 0.35; its spread over X
            (standard deviation) 0.12 .. 0.20 (0.12 .. 0.23); a gate above 0.9 at 0.1% (0.8%) of the inputs
    d = 16  true atoms 3.12 (3.82) apart;  largest gate weight 0.56 (0.60);  entropy 0.76 (0.71);  mean weights
            0.16 .. 0.35;  spread 0.13 .. 0.25 (0.14 .. 0.28);  a gate above 0.9 at 2% (6%) of the inputs
    (the d = 2 truth: largest gate weight 0.46, entropy 0.89, spread 0.04 .. 0.16)

Over every supported shape (m 1..d, L* 1..4, N 1..4, r = d or d + 1; 4,000 inputs each) the atoms stay >= 1.6
apart, the mean largest gate weight is in 0.35 .. 0.76, the entropy in 0.68 .. 0.86, every gate has mean weight
>= 0.049 (of up to 8 gates) and spread >= 0.05, and a gate is above 0.9 at <= 21% of the inputs: the gates are
neither saturated nor uniform. The truth is named "canonical-d8-m4"; shapes off the defaults
add "-L<L*>", "-N<N>", "-r<r>". latent_dim = d + 1 is the non-injective variant, built as "canonical-r3" is from
the d = 2 truth: W_K gets the column W_K (1/d, ..., 1/d)^T, W_V the column (0.7, ..., 0.7)^T, p*_i a coordinate 0
(same true prefix and f* as r = d).

Random truths follow the same recipe with every number drawn from a seed, rejecting draws whose true
prefix atoms are closer than `min_separation` (THEORY's atoms must be distinct). Their shape (d, m, r, L*, N)
defaults to (2, 1, 2, 2, 2); a truth off that shape is named e.g. "random-7-d8-m4".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .moe import DTYPE, PretrainedExperts, prefix_moe
from .structures import Structure, build_structure
from .validation import ConfigError, check_int, check_number, require

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
        return self._sample(n, seed)[:2]

    def _sample(self, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
        """sample(n, seed) and f*(X), the regression the noise is added to."""
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
        mean = self.regression(X)
        return X, mean + self.noise * eps, mean

    def sample_replicates(self, n: int, seeds: list[int], with_mean: bool = False):
        """Stacked streams: X (R, n, d), Y (R, n, m); with_mean: also f*(X) (R, n, m), the regression the noise was
        added to (the same numbers as self.regression on the stacked X, without a second pass over the data)."""
        parts = [self._sample(n, s) for s in seeds]
        X, Y, mean = (torch.stack([p[k] for p in parts]) for k in range(3))
        return (X, Y, mean) if with_mean else (X, Y)

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

#: Input dimensions of the canonical truths: 2 (the documented d = 2 truth) and the head-like family.
CANONICAL_DIMS = (2,)
HEAD_DIMS = (8, 16)
SHAPE_FIELDS = ("d", "m", "n_atoms", "n_experts", "latent_dim")
#: The shape of a random truth when not given (random_truth's defaults).
RANDOM_SHAPE = dict(d=2, m=1, n_atoms=2, n_experts=2, latent_dim=2)
HEAD_MAX_ATOMS = 4
HEAD_MAX_EXPERTS = 4


def default_shape(kind: str, d: int | None = None) -> dict | None:
    """The shape {d, m, n_atoms, n_experts, latent_dim} a truth of `kind` gets when only `d` (or nothing) is given;
    None when `kind` or `d` has no canonical default."""
    if kind == "random":
        return dict(RANDOM_SHAPE, **({} if d is None else {"d": d}))
    if kind == "canonical":
        if d is None or d == 2:
            return dict(d=2, m=1, n_atoms=2, n_experts=2, latent_dim=2)
        if d in HEAD_DIMS:
            return dict(d=d, m=4, n_atoms=2, n_experts=2, latent_dim=d)
    return None


def canonical_shape(d: int | None = None, m: int | None = None, n_atoms: int | None = None,
                    n_experts: int | None = None, latent_dim: int | None = None, prefix: str = "") -> dict:
    """The resolved shape of a canonical truth (None: the default for that d); ConfigError naming the field
    (`prefix` + its name, e.g. 'truth.m') and what is supported when no canonical truth has that shape."""
    given = dict(d=d, m=m, n_atoms=n_atoms, n_experts=n_experts, latent_dim=latent_dim)
    for name, value in given.items():
        if value is not None:
            check_int(prefix + name, value, low=1)
    if d is not None and d not in CANONICAL_DIMS + HEAD_DIMS:
        raise ConfigError(f"{prefix}d={d!r} is invalid: the canonical truths have d = 2 (the documented d = 2 truth) "
                          f"or d in {list(HEAD_DIMS)} (the head-like family, reparam.truth); truth=random takes any d")
    shape = default_shape("canonical", d)
    shape.update({k: int(v) for k, v in given.items() if v is not None})
    if shape["d"] == 2:
        supported = dict(m=(1,), n_atoms=(2,), n_experts=(2,), latent_dim=(2, 3))
        for name, allowed in supported.items():
            require(shape[name] in allowed, prefix + name, shape[name],
                    f"{' or '.join(map(str, allowed))} for the canonical d = 2 truth (the head-like canonical truths "
                    f"d in {list(HEAD_DIMS)} take other shapes; truth=random takes any)")
    else:
        dd = shape["d"]
        for name, high in (("m", dd), ("n_atoms", HEAD_MAX_ATOMS), ("n_experts", HEAD_MAX_EXPERTS)):
            require(shape[name] <= high, prefix + name, shape[name],
                    f"an integer from 1 to {high} for the canonical d = {dd} truth")
        require(shape["latent_dim"] in (dd, dd + 1), prefix + "latent_dim", shape["latent_dim"],
                f"{dd} (= d: an injective key map) or {dd + 1} (d + 1: not injective) for the canonical d = {dd} truth")
    return shape


def resolved_shape(kind: str, d: int | None = None, m: int | None = None, n_atoms: int | None = None,
                   n_experts: int | None = None, latent_dim: int | None = None) -> dict | None:
    """The full shape {d, m, n_atoms, n_experts, latent_dim} a truth of `kind` gets from the given fields (None:
    the kind's default), without building it (the preflight sizes a truth from it); None for an unknown kind.
    ConfigError for a canonical shape that does not exist (canonical_shape)."""
    given = dict(d=d, m=m, n_atoms=n_atoms, n_experts=n_experts, latent_dim=latent_dim)
    if kind == "canonical":
        return canonical_shape(**given)
    if kind == "random":
        shape = default_shape("random", d)
        shape.update({k: int(v) for k, v in given.items() if v is not None})
        return shape
    return None


def _cas(x: np.ndarray) -> np.ndarray:
    return np.cos(x) + np.sin(x)


def head_canonical_values(d: int, m: int, n_atoms: int, n_experts: int) -> dict:
    """Every number of the head-like canonical truth with r = d (module docstring), as arrays:
    A (N, d, d), a (N,), H (N, d, m), W_K (d, d), W_V (m, d), p (L*, d), b (L*,)."""
    r = d
    j, a = np.arange(d)[:, None], np.arange(r)[None, :]
    c, i = np.arange(m)[:, None], np.arange(n_atoms)[:, None]
    W_K = _cas(2 * np.pi * j * a / d) / np.sqrt(d)
    W_V = np.sqrt(2 / r) * np.cos(np.pi * (2 * c + 1) * (2 * a + 1) / (4 * r))
    p = 0.6 * _cas(np.pi * (a + i) ** 2 / r)
    b = 0.5 - 0.2 * np.arange(n_atoms)
    jj = np.arange(d)
    A = np.stack([(2 / d) * np.cos(np.pi * (e + 1) * (jj[:, None] + jj[None, :] + 1) / (d + 1))
                  for e in range(n_experts)])
    H = np.stack([_cas(2 * np.pi * jj[:, None] * (np.arange(m)[None, :] + e * m) / d) / np.sqrt(d)
                  for e in range(n_experts)])
    return dict(A=A, a=-0.25 * np.arange(n_experts), H=H, W_K=W_K, W_V=W_V, p=p, b=b)


def _null_latent(W_K: np.ndarray, W_V: np.ndarray, p: np.ndarray, mix: np.ndarray, value: float):
    """One more latent coordinate whose key column W_K mix is in the span of the others (so the key map is not
    injective), with value entry `value` and true coordinate 0: the same true prefix."""
    W_K = np.concatenate([W_K, W_K @ mix[:, None]], axis=1)
    W_V = np.concatenate([W_V, np.full((W_V.shape[0], 1), value)], axis=1)
    p = np.concatenate([p, np.zeros((len(p), 1))], axis=1)
    return W_K, W_V, p


def canonical_name(shape: dict) -> str:
    """"canonical", "canonical-r3" (d = 2) or "canonical-d8-m4" plus -L<L*>, -N<N>, -r<r> off the defaults."""
    d = shape["d"]
    if d == 2:
        return "canonical" if shape["latent_dim"] == 2 else f"canonical-r{shape['latent_dim']}"
    name = f"canonical-d{d}-m{shape['m']}"
    for field, tag, default in (("n_atoms", "L", 2), ("n_experts", "N", 2), ("latent_dim", "r", d)):
        if shape[field] != default:
            name += f"-{tag}{shape[field]}"
    return name


def canonical_truth(structure: str, activation: str = "tanh", noise: float | None = None,
                    latent_dim: int | None = None, d: int | None = None, m: int | None = None,
                    n_atoms: int | None = None, n_experts: int | None = None) -> GroundTruth:
    """The documented canonical truth for `structure` (see the module docstring).

    A shared_mlp with another `activation` keeps p*, W_K, W_V and so has its own regression function.
    d: 2 (default: the documented d = 2 truth) or 8, 16 (the head-like family). None for any shape field means the
    default for that d (d = 2: m = 1, L* = 2, N = 2, r = 2; d = 8, 16: m = 4, L* = 2, N = 2, r = d).
    latent_dim: at d = 2, r = 2 (W_K of full column rank: injective key map) or 3 (r > d = 2: W_K has the null
    direction z = (0.5, 0.5, -1); same true prefix and f*, named "canonical-r3"); at d = 8, 16, r = d (injective)
    or d + 1 (not injective, the same construction). Another shape: ConfigError naming the field."""
    shape = canonical_shape(d, m, n_atoms, n_experts, latent_dim)
    if shape["d"] == 2:
        c = CANONICAL
        W_K, W_V, p, b = np.array(c["W_K"]), np.array(c["W_V"]), np.array(c["p"]), np.array(c["b"])
        experts = PretrainedExperts(A=c["A"], a=c["a"], H=c["H"])
        if shape["latent_dim"] == 3:
            W_K, W_V, p = _null_latent(W_K, W_V, p, np.array(LATENT_EXTRA["W_K_mix"]), LATENT_EXTRA["W_V"])
    else:
        v = head_canonical_values(shape["d"], shape["m"], shape["n_atoms"], shape["n_experts"])
        W_K, W_V, p, b = v["W_K"], v["W_V"], v["p"], v["b"]
        experts = PretrainedExperts(A=v["A"], a=v["a"], H=v["H"])
        if shape["latent_dim"] == shape["d"] + 1:
            W_K, W_V, p = _null_latent(W_K, W_V, p, np.full(shape["d"], 1.0 / shape["d"]), LATENT_EXTRA["W_V"])
    s = _structure_for_truth(structure, shape["d"], shape["m"], W_K, W_V, activation, None)
    theta = _latent_truth_theta(s, p, b, W_K, W_V)
    return GroundTruth(name=canonical_name(shape), structure=s, experts=experts, theta=theta,
                       n_atoms=shape["n_atoms"], noise=CANONICAL["noise"] if noise is None else noise)


def random_name(seed: int, d: int, m: int, r: int, n_atoms: int, n_experts: int) -> str:
    """"random-<seed>", plus -d<d>, -m<m>, -L<L*>, -N<N>, -r<r> for every shape off random_truth's defaults."""
    name = f"random-{seed}"
    for value, tag, default in ((d, "d", 2), (m, "m", 1), (n_atoms, "L", 2), (n_experts, "N", 2), (r, "r", 2)):
        if value != default:
            name += f"-{tag}{value}"
    return name


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
    at least `min_separation` apart (Euclidean, in (k, v) space). Named "random-<seed>" at the default shape,
    with the shape fields off their defaults appended otherwise (random_name)."""
    if min_separation < 0:
        raise ValueError(f"min_separation must be >= 0, got {min_separation}")
    for name, value in (("d", d), ("m", m), ("r", r), ("n_atoms", n_atoms), ("n_experts", n_experts)):
        check_int(name, value, low=1)
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
    return GroundTruth(name=random_name(seed, d, m, r, n_atoms, n_experts), structure=s, experts=experts,
                       theta=theta, n_atoms=n_atoms, noise=noise)


def make_truth(kind: str, structure: str, seed: int = 0, activation: str = "tanh", noise: float | None = None,
               d: int | None = None, m: int | None = None, n_atoms: int | None = None, n_experts: int | None = None,
               latent_dim: int | None = None, **random_settings) -> GroundTruth:
    """`kind` is 'canonical' or 'random'. The shape (d, m, n_atoms = L*, n_experts = N, latent_dim = r): None = the
    kind's default (default_shape)."""
    shape = dict(d=d, m=m, n_atoms=n_atoms, n_experts=n_experts, latent_dim=latent_dim)
    if kind == "canonical":
        return canonical_truth(structure, activation=activation, noise=noise, **shape)
    if kind == "random":
        given = {("r" if k == "latent_dim" else k): v for k, v in shape.items() if v is not None}
        return random_truth(structure, seed, activation=activation, noise=0.1 if noise is None else noise,
                            **given, **random_settings)
    raise ValueError(f"truth={kind!r} is unknown; choose 'canonical' or 'random'")
