"""seqlab's Hydra plugin: Hydra's Optuna sweeper, resumable (the loop is in `seqlab.search`).

Hydra instantiates sweepers only from the `hydra_plugins` namespace package, hence this module; it
stays light because Hydra imports every plugin module on each start.
"""

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # installed without the `sweep` extra: no Optuna search, and no plugin warning at each start
    OptunaSweeper = None

if OptunaSweeper is not None:

    class ResumableOptunaSweeper(OptunaSweeper):
        """Same config as Hydra's `optuna` sweeper; finished trials go to a journal and a rerun resumes."""

        def __init__(self, **options) -> None:
            from seqlab.search import ResumableOptunaSweeperImpl

            self.sweeper = ResumableOptunaSweeperImpl(**options)
