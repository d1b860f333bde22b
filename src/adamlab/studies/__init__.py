"""Studies: which optimizer and step size for a fine-tune, answered by a sweep.

Data flows one way: a spec (``spec``) expands into trials (``trials``), each trial is trained and evaluated by an
executor (``executors``), the results go to the study's store (``store``), and reports (``adamlab.reports``) read
only the store.
"""

from .bundled import bundled_studies, copy_study, resolve_spec
from .executors import Executor, LocalExecutor, SweepListener, get_executor, run_trial
from .recommend import RecommendSettings, recommend
from .spec import Arm, Budget, SpecError, StudyLR, StudySchedule, StudySpec, StudyTask, load_spec, parse_spec
from .results_table import results_dataframe, trial_records, write_results
from .store import Owner, Store, TrialOutcome, TrialRow
from .sweep import SweepResult, default_study_dir, sweep
from .trials import Trial, expand_trials, trial_folder, trial_key

__all__ = [
    "Arm", "Budget", "Executor", "LocalExecutor", "Owner", "RecommendSettings", "SpecError", "Store", "StudyLR",
    "StudySchedule", "bundled_studies", "copy_study", "resolve_spec",
    "StudySpec", "StudyTask", "SweepListener", "SweepResult", "Trial", "TrialOutcome", "TrialRow", "default_study_dir",
    "expand_trials", "get_executor", "load_spec", "parse_spec", "recommend", "results_dataframe", "run_trial", "sweep",
    "trial_folder", "trial_key", "trial_records", "write_results",
]
