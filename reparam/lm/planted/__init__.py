"""The planted-prefix rate check in a real transformer (THEORY section 6), small enough for a CPU.

A frozen transformer plus a TRUE prefix is the teacher. Students with each prefix structure are fitted by
maximum likelihood to tokens SAMPLED from the teacher (so the data are noisy and n matters, as in the
synthetic study), and the learned prefix is compared with the true one in prefix space. One file per concern:

    model.py      the frozen random-init base (BaseConfig, make_base), log-probabilities at fixed positions
    truth.py      truth families, students and sampled data (PlantedConfig, plant_truth, make_student,
                  sample_data); what a structure contributes is declared in its class (reparam.lm.structures)
    estimator.py  float64 multi-start L-BFGS, prefix-space errors, held-out KL (LBFGSConfig, PlantedStudy)
    analysis.py   estimates, truth scales, slopes and verdicts from the recorded fits (StudyConfig)
    settings.py   the app's settings, their validation and the setting fingerprint
    headline.py   the headline figure and n-to-target table, the largest-n table and the closing-note report
    inverse.py    the inverse bound inside attention: query constancy, the attention witness, psi(delta) (PsiConfig)

The names below are the package's API (`from reparam.lm import planted as pl`).
"""
from .analysis import (ERRORS, StudyConfig, add_normalised_errors, check_lines, estimates, predictions,
                       slope_table, truth_references)
from .estimator import LBFGSConfig, PlantedStudy, fit_lbfgs, heldout_kl, nll, prefix_errors
from .model import ARCHS, BaseConfig, logits, make_base, natural_kv_rms, positions
from .settings import (APP_KEYS, MODES, SECTIONS, PlantedPrefixConf, config_record, help_text, setting_id,
                       validate_study)
from .truth import (REGIMES, TRUTHS, PlantedConfig, PlantedData, Truth, make_student, plant_truth, sample_data,
                    seed_of)

__all__ = ["ERRORS", "StudyConfig", "add_normalised_errors", "check_lines", "estimates", "predictions",
           "slope_table", "truth_references", "LBFGSConfig", "PlantedStudy", "fit_lbfgs", "heldout_kl", "nll",
           "prefix_errors", "ARCHS", "BaseConfig", "logits", "make_base", "natural_kv_rms", "positions", "APP_KEYS",
           "MODES", "SECTIONS", "PlantedPrefixConf", "config_record", "help_text", "setting_id", "validate_study",
           "REGIMES", "TRUTHS", "PlantedConfig", "PlantedData", "Truth", "make_student", "plant_truth",
           "sample_data", "seed_of"]
