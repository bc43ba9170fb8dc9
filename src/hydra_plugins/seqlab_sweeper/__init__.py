"""seqlab's Hydra sweeper plugin: `hydra/sweeper=seqlab_optuna`, an Optuna search driven by ask and tell.

Hydra instantiates sweepers only from the `hydra_plugins` namespace package, hence this module; it stays light
(no Optuna import) because Hydra imports every plugin module on each start. The loop is `seqlab.search.study`.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.seqlab_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sampler and pruner stay configs: seqlab makes them per trial and per job
    # hydra/sweeper/sampler=tpe|random, hydra/sweeper/pruner=median|hyperband|successive_halving (conf/hydra/sweeper)
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": None}])
    direction: str = "maximize"  # minimize for a loss/* optimized_metric
    study_name: Optional[str] = None  # null: tracking.sweep, else the sweep folder's date and time
    storage: Optional[str] = None  # null: a journal file next to the MLflow store; a file path; a database URL
    n_trials: int = 20  # the study's total, whatever the number of workers and restarts
    n_jobs: int = 1  # trials launched at once by this worker (in parallel with a parallel launcher)
    max_failure_rate: float = 0.0  # failed trials / trials run by this worker above which the worker stops
    heartbeat_interval: float = 10.0  # seconds between a worker's signs of life in its running trials
    grace_period: float = 60.0  # a running trial silent this long lost its worker: it is failed and run again
    max_retry: int = 2  # times a lost trial is run again
    sampler: Any = None
    pruner: Any = None  # null: no pruning
    params: Optional[Dict[str, str]] = None  # the search space, in Hydra's sweep grammar


ConfigStore.instance().store(group="hydra/sweeper", name="seqlab_optuna", node=OptunaSweeperConf, provider="seqlab")


class OptunaSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        self.options = options

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from seqlab.search.study import sweep

        return sweep(self, arguments)
