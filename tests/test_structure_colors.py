"""One colour per structure across every figure (reparam.plots.color_for): the synthetic structures' own, the
real-model structures' from their registry (reparam.lm.structures `color`), the committed figures' colours
unchanged, and no torch import for a synthetic-only figure."""
import subprocess
import sys
from typing import ClassVar

from reparam.lm.structures import LMStructure, register, unregister
from reparam.plots import color_for

#: The colours of every committed figure (synthetic and real-model), before the real-model names moved to the
#: registry; infix and fixed declare none (a colour from the name).
COMMITTED = {"shared_mlp": "#1b9e77", "shared_linear": "#7570b3", "independent": "#d95f02",
             "shared_learned": "#e7298a", "shared": "#1b9e77", "shared_fixed": "#7570b3", "deep_shared": "#66a61e",
             "embedding_only": "#1f78b4", "infix": "#666666", "fixed": "#e6ab02"}


def test_committed_colours_are_unchanged():
    assert {name: color_for(name) for name in COMMITTED} == COMMITTED


def test_a_registered_structure_gets_its_declared_colour_never_its_parents():
    class Painted(LMStructure):
        name: ClassVar[str] = "painted_test"
        color: ClassVar[str | None] = "#123456"

    class Plain(Painted):
        name: ClassVar[str] = "plain_test"

    register(Painted)
    register(Plain)
    try:
        assert color_for("painted_test") == "#123456"
        assert color_for("plain_test") == color_for("plain_test") != "#123456"  # from its name, deterministic
    finally:
        unregister("painted_test")
        unregister("plain_test")


def test_synthetic_colours_import_no_torch():
    code = ("import sys; from reparam.plots import color_for, STRUCTURE_COLORS; "
            "[color_for(n) for n in STRUCTURE_COLORS]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
