"""`hydra/launcher=submitit_slurm` on a Slurm without accounting (no slurmdbd, as a single machine often has).

submitit learns a job's state from `sacct` alone. Without accounting every poll fails: sacct prints "Slurm
accounting storage is disabled" and submitit logs "Bypassing sacct error ..., status may be inaccurate", dozens of
times in a short sweep; worse, a job that Slurm ends without a result (scancel, time or memory limit) stays
UNKNOWN, so the sweep waits for it forever. `SlurmJobStates` (a Hydra callback, conf/config.yaml) gives submitit's
Slurm jobs a watcher that tries sacct once and, where it fails, asks `squeue` instead, saying so once.
"""

from __future__ import annotations

import logging
import subprocess
import time

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)
ENDED = "ENDED"  # no longer known to squeue (after MinJobAge): ended, its result file tells how


def squeue_watcher(delay_s: int = 600):
    """A submitit SlurmInfoWatcher that falls back to squeue where sacct fails (built here: submitit is imported
    only for a Slurm sweep)."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueFallbackWatcher(SlurmInfoWatcher):
        use_squeue: bool | None = None  # None: sacct not tried yet

        def update(self) -> None:
            if self.use_squeue is False:
                return super().update()
            command = self._make_command()  # sacct's, for the jobs still running
            if command is None:
                return
            if self.use_squeue is None:
                sacct = subprocess.run(command, capture_output=True, text=True)
                self.use_squeue = sacct.returncode != 0
                if not self.use_squeue:
                    self._num_calls += 1
                    self._output = sacct.stdout.encode()
                    self._info_dict.update(self.read_info(sacct.stdout))
                    return self._check_finished()
                log.info(f"this Slurm has no job accounting (sacct: {sacct.stderr.strip() or sacct.returncode}); "
                         "job states come from squeue")
            self._num_calls += 1
            jobs = sorted({job_id.split("_")[0] for job_id in self._registered - self._finished})
            squeue = subprocess.run(["squeue", "--noheader", "--states=all", "--format=%i|%T|%N",
                                     f"--jobs={','.join(jobs)}"], capture_output=True, text=True)
            if squeue.returncode == 0 or "Invalid job id" in squeue.stderr:  # the latter: all of them gone
                self._output = squeue.stdout.encode()
                info = self.read_info("JobID|State|NodeList\n" + squeue.stdout)
                for job_id in self._registered - self._finished:
                    info.setdefault(job_id, {"JobID": job_id, "State": ENDED})
                self._info_dict.update(info)
            else:  # the controller did not answer: states as they were, asked again at the next poll
                log.warning(f"squeue failed, job states may be outdated: {squeue.stderr.strip()}")
            self._check_finished()

        def _check_finished(self) -> None:
            self._last_status_check = time.time()
            for job_id in self._registered - self._finished:
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

    return SqueueFallbackWatcher(delay_s=delay_s)


class SlurmJobStates(Callback):
    """Installs the squeue fallback in the sweep's process before a submitit_slurm launcher submits any job."""

    def on_multirun_start(self, config, **kwargs) -> None:
        target = str(config.hydra.launcher.get("_target_", ""))
        if target.startswith("hydra_plugins.hydra_submitit_launcher.") and target.endswith(".SlurmLauncher"):
            from submitit.slurm.slurm import SlurmJob

            SlurmJob.watcher = squeue_watcher()
