"""How prompt experts are parameterised (THEORY section 2), as a registry.

Every structure maps its NATIVE parameters to the common PREFIX space (keys, values, biases):

    native, per prompt i:  b_i and an atom vector of `atom_dim` numbers
                           (independent: [k_i, v_i]; shared_*: the latent p_i)
    native, per fit:       `global_dim` numbers shared by all prompts (only shared_learned: the MLP)
    prefix, per prompt i:  k_i (d,), v_i (m,), b_i

A fit's parameters are one flat vector (..., P) laid out as [b_1..b_L | atoms (L * atom_dim) | globals],
so a solver can treat every structure alike.

A new structure is one subclass with @register; the class is the ONE place that declares what the study needs:
    name           the registry key, the `structure.names` entry and its own Hydra option `structure=<name>`
    theorem        the THEORY result that covers it (None: outside the theorems)
    theory_rows    which family of rates of THEORY section 5 predicts its curves: "shared" (the tied structures of
                   Theorems 2 and 3), "independent" (Theorem 1) or None (no predicted rate); the rates of each family
                   are the theory table's (reparam.theory.THEORY_TABLE)
    hydra_options  the composite Hydra options `structure=<option>` it belongs to besides its own (e.g. "all")
    inverse_bound  THEORY section 7 per regime, {"exact": "holds" | "fails", "over": ...}: whether D <= C ||f - f*||
                   near the truth; it selects the theory table's inverse-ratio and inverse-bound rates; {} = none
    inverse_bound_not_injective   the same where the key map is not injective (tied structures with r > d);
                   "open" where the theory leaves it to the measurement. `predicted_inverse_bound()` picks one
    truth_theta()  its truth recipe: the native parameters that express the latent truth (reparam.truth)
    witness_direction(), witness_weight()   its f-equivalent witness, if it has one (reparam.identifiability)
    key_map()      how its keys depend on the native atom, as the inverse-bound table names it
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import Tensor

from .moe import DTYPE

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "sigmoid": torch.sigmoid,
}

class NoWitnessError(ValueError):
    """The structure has no same-key f-equivalent split (e.g. an injective key map, or no construction declared)."""


STRUCTURES: dict[str, type["Structure"]] = {}
_REGISTRY_LISTENERS: list[Callable[[], None]] = []  # e.g. reparam.study_config's Hydra options, refreshed on each change


def register(cls: type["Structure"]) -> type["Structure"]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a class attribute `name` to be registered")
    STRUCTURES[cls.name] = cls
    for listener in _REGISTRY_LISTENERS:
        listener()
    return cls


def unregister(name: str) -> None:
    """Remove a registered structure (e.g. one a test defined)."""
    STRUCTURES.pop(name, None)
    for listener in _REGISTRY_LISTENERS:
        listener()


def on_registry_change(listener: Callable[[], None]) -> None:
    """Call `listener()` now and after every register/unregister (keeps derived tables, e.g. Hydra options, in step)."""
    _REGISTRY_LISTENERS.append(listener)
    listener()


class StructureSelection(Sequence):
    """The registered structures whose class satisfies `predicate`, looked up at every use (so a structure
    registered later joins); reads like the list of their names (iteration, len, ==, repr). Registry order, or
    sorted by `order(cls)` when given."""

    def __init__(self, predicate: Callable[[type["Structure"]], bool], description: str,
                 order: Callable[[type["Structure"]], Any] | None = None):
        self.predicate, self.description, self.order = predicate, description, order

    def names(self) -> list[str]:
        chosen = [(name, cls) for name, cls in STRUCTURES.items() if self.predicate(cls)]
        if self.order is not None:
            chosen.sort(key=lambda item: self.order(item[1]))
        return [name for name, _ in chosen]

    def __getitem__(self, i):
        return self.names()[i]

    def __len__(self) -> int:
        return len(self.names())

    def __eq__(self, other) -> bool:
        return isinstance(other, (Sequence, list, tuple)) and list(self) == list(other)

    def __repr__(self) -> str:
        return repr(self.names())


def with_theory_rows(*rows: str) -> StructureSelection:
    """The structures whose declared `theory_rows` is one of `rows` (e.g. "shared")."""
    return StructureSelection(lambda cls: cls.theory_rows in rows, f"theory_rows in {rows}")


def with_inverse_bound() -> StructureSelection:
    """The structures that declare THEORY section 7's inverse bound for some regime (`inverse_bound`)."""
    return StructureSelection(lambda cls: bool(cls.inverse_bound), "inverse_bound declared")


def with_theorem() -> StructureSelection:
    """The structures a THEORY theorem covers (`theorem` declared), in the theorems' order."""
    return StructureSelection(lambda cls: cls.theorem is not None, "theorem declared", order=lambda cls: cls.theorem)


def get_activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


@dataclass
class Structure:
    """Base class. Fields: d (input dim), m (output dim)."""

    name: ClassVar[str] = ""
    theorem: ClassVar[str | None] = None  # which THEORY result covers it; None = outside the theorems
    theory_rows: ClassVar[str | None] = None  # "shared" | "independent" | None (module docstring)
    hydra_options: ClassVar[tuple[str, ...]] = ()  # composite `structure=` options it joins, e.g. ("all",)
    inverse_bound: ClassVar[dict[str, str]] = {}  # regime -> "holds" | "fails" (module docstring); {} = no prediction
    inverse_bound_not_injective: ClassVar[dict[str, str]] = {}  # the same with a non-injective key map
    d: int
    m: int

    @property
    def atom_dim(self) -> int:
        raise NotImplementedError

    @property
    def global_dim(self) -> int:
        return 0

    def n_params(self, n_atoms: int) -> int:
        return n_atoms * (1 + self.atom_dim) + self.global_dim

    def split(self, theta: Tensor, n_atoms: int) -> tuple[Tensor, Tensor, Tensor]:
        """(..., P) -> biases (..., L), atoms (..., L, atom_dim), globals (..., G)."""
        if theta.shape[-1] != self.n_params(n_atoms):
            raise ValueError(
                f"theta has {theta.shape[-1]} parameters; {self.name} with {n_atoms} atoms needs {self.n_params(n_atoms)}"
            )
        L, q = n_atoms, self.atom_dim
        biases = theta[..., :L]
        atoms = theta[..., L : L + L * q].reshape(*theta.shape[:-1], L, q)
        return biases, atoms, theta[..., L + L * q :]

    def join(self, biases: Tensor, atoms: Tensor, globals_: Tensor | None = None) -> Tensor:
        parts = [biases, atoms.reshape(*atoms.shape[:-2], -1)]
        if self.global_dim:
            parts.append(globals_.expand(*biases.shape[:-1], self.global_dim))
        return torch.cat(parts, dim=-1)

    def prefix_from_atoms(self, atoms: Tensor, globals_: Tensor) -> tuple[Tensor, Tensor]:
        """atoms (..., L, q), globals (..., G) -> keys (..., L, d), values (..., L, m)."""
        raise NotImplementedError

    def prefix(self, theta: Tensor, n_atoms: int) -> tuple[Tensor, Tensor, Tensor]:
        """(..., P) -> keys (..., L, d), values (..., L, m), biases (..., L)."""
        biases, atoms, globals_ = self.split(theta, n_atoms)
        keys, values = self.prefix_from_atoms(atoms, globals_)
        return keys, values, biases

    def random_atoms(self, shape: tuple[int, ...], generator: np.random.Generator, scale: float) -> Tensor:
        """Native atoms drawn for random starts and random truths: (*shape, atom_dim)."""
        return torch.as_tensor(generator.uniform(-scale, scale, size=(*shape, self.atom_dim)), dtype=DTYPE)

    def random_globals(self, shape: tuple[int, ...], generator: np.random.Generator) -> Tensor:
        return torch.zeros(*shape, 0, dtype=DTYPE)

    def truth_theta(self, biases: Tensor, latents: Tensor, W_K: Tensor, W_V: Tensor) -> Tensor:
        """The truth recipe (reparam.truth): native parameters (P*,) that express the latent truth with true
        biases (L*,), latent prompts p*_i (L*, r) and tie maps W_K (d, r), W_V (m, r). The theorem structures
        express one f* (the tanh-tied prefix); a tied structure of its own kind keeps p*, W_K, W_V instead."""
        raise NotImplementedError(f"structure {self.name!r} declares no truth recipe: define truth_theta()")

    # The witness of THEORY section 7 (reparam.identifiability.witness_theta): true atom j is split into two atoms
    # p* + (1 - alpha) s z and p* - alpha s z along a native direction z that keeps the key and moves the value,
    # with weights beta and 1 - beta chosen so that the values average to v*: f stays exactly f*.

    def witness_direction(self) -> Tensor:
        """The unit native direction z (atom_dim,) of the witness; NoWitnessError, naming why, when there is none."""
        raise NoWitnessError(f"structure={self.name!r} declares no witness construction (witness_direction)")

    def witness_weight(self, values: Tensor, alpha: float, scale: float) -> float:
        """beta with beta v_1 + (1 - beta) v_2 = v*, from values (3, m) = v*, v_1, v_2 of the split at `scale`.
        This default holds where the value is affine in the atom along z (then beta = alpha); a structure whose
        value is not (shared_mlp) solves for beta instead."""
        if float((values[1] - values[2]).norm()) == 0 and scale != 0:
            raise NoWitnessError(f"{self.name}: the value does not move along the witness direction: the split atoms "
                                 f"coincide (D = 0)")
        return alpha

    def key_map(self) -> str:
        """How the keys depend on the native atom, as the inverse-bound table names it (e.g. 'injective')."""
        return "not declared"

    def predicted_inverse_bound(self, regime: str) -> str:
        """THEORY section 7's prediction for this structure's key map in `regime`: 'holds', 'fails', or 'open'
        (no prediction: the theory leaves it to the measurement, or the class declares none)."""
        declared = self.inverse_bound_not_injective if self.key_map() == "not injective" else self.inverse_bound
        return declared.get(regime, "open")


@dataclass
class _TiedStructure(Structure):
    """Keys and values are two functions of one latent p_i in R^r through FIXED, known W_K (d, r), W_V (m, r)."""

    theory_rows: ClassVar[str | None] = "shared"  # the tied structures' rates (reparam.theory.THEORY_TABLE)
    hydra_options: ClassVar[tuple[str, ...]] = ("all", "shared")
    # the fits' truths have r <= d (injective key map): the bound holds in both regimes (THEORY section 7)
    inverse_bound: ClassVar[dict[str, str]] = {"exact": "holds", "over": "holds"}
    r: int = 2
    W_K: Tensor = None
    W_V: Tensor = None

    def __post_init__(self):
        if self.W_K is None or self.W_V is None:
            raise ValueError(f"{self.name} needs the fixed matrices W_K ({self.d}, {self.r}) and W_V ({self.m}, {self.r})")
        self.W_K = torch.as_tensor(self.W_K, dtype=DTYPE)
        self.W_V = torch.as_tensor(self.W_V, dtype=DTYPE)
        if tuple(self.W_K.shape) != (self.d, self.r):
            raise ValueError(f"W_K must have shape ({self.d}, {self.r}), got {tuple(self.W_K.shape)}")
        if tuple(self.W_V.shape) != (self.m, self.r):
            raise ValueError(f"W_V must have shape ({self.m}, {self.r}), got {tuple(self.W_V.shape)}")

    @property
    def atom_dim(self) -> int:
        return self.r

    def truth_theta(self, biases, latents, W_K, W_V):
        """Its own truth: the same p*, W_K, W_V through its own maps (W_K, W_V are this structure's fields)."""
        return self.join(biases, latents)

    def witness_direction(self) -> Tensor:
        """A latent direction z with W_K z = 0 (the key stays), the one of the null space that moves the value
        most; it exists iff r > rank W_K (e.g. r > d). An injective key map has none."""
        _, sv, Vh = torch.linalg.svd(self.W_K, full_matrices=True)  # W_K (d, r)
        rank = int((sv > 1e-12 * sv.max()).sum())
        if rank == self.r:
            raise NoWitnessError(f"{self.name} with W_K of full column rank (r = {self.r} <= d = {self.d}) has an "
                                 f"injective key map: the same key forces the same latent p, hence the same value "
                                 f"(THEORY section 7)")
        null = Vh[rank:].T  # (r, r - rank): a basis of the null space of W_K
        _, _, vh = torch.linalg.svd(self.W_V @ null)
        z = null @ vh[0]
        return z / z.norm()

    def key_map(self) -> str:
        return "injective" if self.r <= self.d else "not injective"


@register
@dataclass
class SharedLinear(_TiedStructure):
    """k_i = W_K p_i, v_i = W_V p_i (THEORY Theorem 2; prompt-tuning is this with the frozen key/value maps)."""

    name: ClassVar[str] = "shared_linear"
    theorem: ClassVar[str | None] = "Theorem 2"
    # r > d: moving p along a null direction z of W_K (u = W_V z) is an exact f-preserving family, so an extra
    # atom can sit at any distance: the bound fails when over-specified
    inverse_bound_not_injective: ClassVar[dict[str, str]] = {"exact": "holds", "over": "fails"}

    def prefix_from_atoms(self, atoms, globals_):
        return atoms @ self.W_K.T, atoms @ self.W_V.T


@register
@dataclass
class SharedMLP(_TiedStructure):
    """k_i = sigma(W_K p_i), v_i = sigma(W_V p_i), one fixed layer (THEORY Theorem 3)."""

    name: ClassVar[str] = "shared_mlp"
    theorem: ClassVar[str | None] = "Theorem 3"
    # r > d: sigma breaks the null-space family of shared_linear, so THEORY makes no over-specified prediction
    inverse_bound_not_injective: ClassVar[dict[str, str]] = {"exact": "holds", "over": "open"}
    activation: str = "tanh"

    def __post_init__(self):
        super().__post_init__()
        self._act = get_activation(self.activation)

    def prefix_from_atoms(self, atoms, globals_):
        return self._act(atoms @ self.W_K.T), self._act(atoms @ self.W_V.T)

    def witness_weight(self, values, alpha, scale):
        """The values are not affine in p: beta solves beta v_1 + (1 - beta) v_2 = v*, which has a solution in
        (0, 1) when m = 1 and sigma is strictly increasing (v* lies between v_1 and v_2)."""
        if self.m != 1:
            raise NoWitnessError(f"shared_mlp with m = {self.m} > 1: v* is in general not on the chord of the value "
                                 f"curve")
        gap = float(values[1, 0] - values[2, 0])
        beta = float(values[0, 0] - values[2, 0]) / gap if gap != 0 else np.nan
        if not 0 < beta < 1:
            raise NoWitnessError(f"shared_mlp: v* is not between the split values (beta = {beta}); sigma must be "
                                 f"strictly increasing and W_V z != 0")
        return beta


@register
@dataclass
class Independent(Structure):
    """Free k_i in R^d, v_i in R^m, b_i for every prompt (THEORY Theorem 1). Atom = [k_i, v_i]."""

    name: ClassVar[str] = "independent"
    theorem: ClassVar[str | None] = "Theorem 1"
    theory_rows: ClassVar[str | None] = "independent"
    hydra_options: ClassVar[tuple[str, ...]] = ("all",)
    # free keys: an extra atom can split a true one at any distance with f unchanged, so the bound fails when over
    inverse_bound: ClassVar[dict[str, str]] = {"exact": "holds", "over": "fails"}

    @property
    def atom_dim(self) -> int:
        return self.d + self.m

    def prefix_from_atoms(self, atoms, globals_):
        return atoms[..., : self.d], atoms[..., self.d :]

    def witness_direction(self) -> Tensor:
        """Along the value coordinates only (u = 1 / sqrt(m) in each): the key is a coordinate of its own."""
        z = torch.zeros(self.atom_dim, dtype=DTYPE)
        z[self.d:] = 1.0 / np.sqrt(self.m)
        return z

    def key_map(self) -> str:
        return "free keys"

    def truth_theta(self, biases, latents, W_K, W_V):
        """The shared_mlp (tanh) prefix, written as free atoms: the SAME f* as shared_mlp."""
        return self.join(biases, torch.cat([torch.tanh(latents @ W_K.T), torch.tanh(latents @ W_V.T)], dim=-1))


@register
@dataclass
class SharedLearned(Structure):
    """[k_i; v_i] = W2 sigma(W1 p_i + c1) + c2 with W1, c1, W2, c2 ALSO estimated (Li & Liang's practice).

    OUTSIDE the theorems: with learned weights and hidden >= d + m the model can express any
    independent prefix, so no rate is predicted. Globals = [W1 (hidden, r), c1 (hidden), W2 (d+m, hidden), c2 (d+m)].
    """

    name: ClassVar[str] = "shared_learned"
    theorem: ClassVar[str | None] = None
    r: int = 2
    hidden: int = 4
    activation: str = "tanh"

    def __post_init__(self):
        self._act = get_activation(self.activation)

    @property
    def atom_dim(self) -> int:
        return self.r

    @property
    def global_dim(self) -> int:
        h, r, o = self.hidden, self.r, self.d + self.m
        return h * r + h + o * h + o

    def unpack_globals(self, globals_: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h, r, o = self.hidden, self.r, self.d + self.m
        sizes = [h * r, h, o * h, o]
        W1, c1, W2, c2 = torch.split(globals_, sizes, dim=-1)
        lead = globals_.shape[:-1]
        return W1.reshape(*lead, h, r), c1, W2.reshape(*lead, o, h), c2

    def prefix_from_atoms(self, atoms, globals_):
        W1, c1, W2, c2 = self.unpack_globals(globals_)
        hidden = self._act(atoms @ W1.transpose(-1, -2) + c1.unsqueeze(-2))  # (..., L, hidden)
        out = hidden @ W2.transpose(-1, -2) + c2.unsqueeze(-2)  # (..., L, d + m)
        return out[..., : self.d], out[..., self.d :]

    def truth_theta(self, biases, latents, W_K, W_V):
        """W1 = [W_K; W_V], c1 = 0, W2 = I, c2 = 0: the SAME f* as shared_mlp (needs hidden = d + m and tanh)."""
        d, m = self.d, self.m
        if self.hidden != d + m or self.activation != "tanh":
            raise ValueError(f"the shared_learned truth needs hidden={d + m} and activation='tanh', got "
                             f"hidden={self.hidden}, activation={self.activation!r}")
        eye = torch.eye(d + m, dtype=DTYPE).reshape(-1)
        zeros = torch.zeros(d + m, dtype=DTYPE)
        globals_ = torch.cat([torch.cat([W_K, W_V], dim=0).reshape(-1), zeros, eye, zeros])
        return self.join(biases, latents, globals_)

    def random_globals(self, shape, generator):
        h, r, o = self.hidden, self.r, self.d + self.m
        parts = [
            generator.normal(0, 1 / np.sqrt(r), size=(*shape, h * r)),
            np.zeros((*shape, h)),
            generator.normal(0, 1 / np.sqrt(h), size=(*shape, o * h)),
            np.zeros((*shape, o)),
        ]
        return torch.as_tensor(np.concatenate(parts, axis=-1), dtype=DTYPE)


def build_structure(name: str, d: int, m: int, **settings) -> Structure:
    """Registry lookup; `settings` are the structure's own fields (r, W_K, W_V, activation, hidden)."""
    if name not in STRUCTURES:
        raise ValueError(f"structure={name!r} is unknown; choose one of {sorted(STRUCTURES)}")
    cls = STRUCTURES[name]
    allowed = {f for f in cls.__dataclass_fields__} - {"d", "m"}
    return cls(d=d, m=m, **{k: v for k, v in settings.items() if k in allowed})
