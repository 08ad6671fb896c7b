"""The Slurm executor: `isoflop sweep run SWEEP --executor slurm ...` submits one job per run through submitit.

Each job calls `run_planned` (run_one.py) for its run inside Slurm; job ids are recorded in jobs.json
(SweepDir.add_job) and submitit keeps its sbatch scripts, pickles and stdout/stderr under SWEEP/slurm/.

Preemption and time limits. Jobs are submitted with `--requeue` and `--signal=USR1@<signal_delay_s>`, so
Slurm sends SIGUSR1 that long before the time limit, and `scancel --signal=USR1 JOB` or a preemption's
SIGTERM do the same: the trainer checkpoints at the current step and raises `Preempted`; the job (rank 0)
then runs `scontrol requeue` on itself and exits without a result, and the requeued job resumes the run from
that checkpoint. A submitit timeout signal (USR2) requeues through submitit's own `Checkpointable` path
(resuming from the newest periodic checkpoint). A run finishes once, however often its job is requeued.

Forks. A fork whose trunk checkpoint is not there yet is submitted with `--dependency=afterok:<trunk job>`.

Multi-GPU. With `--gpus-per-node G` (G > 1) or `--nodes N`, each job runs G tasks per node under srun (not
torchrun): every task reads its rank from Slurm (submitit's TorchDistributedEnvironment exports RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), so every rank receives Slurm's signal itself. Outside Slurm the
equivalent command line is `torchrun --nproc-per-node G -m isoflop sweep run-one SWEEP KEY`. Not tested here
(no GPUs); the single-task path is tested against a real one-node Slurm (tests/sweep/test_slurm.py).

Job states come from `sacct` where accounting storage answers, else from `scontrol show job` (which knows a
finished job for the cluster's MinJobAge), else the folder alone decides (status.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from isoflop.config import Config, config
from isoflop.errors import ConfigError
from isoflop.sweep.layout import SweepDir
from isoflop.sweep.local import EXIT_PREEMPTED, SweepSummary, not_done, select_runs
from isoflop.sweep.lock import SweepLock
from isoflop.sweep.run_one import read_failure, trunk_checkpoint_ready

ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                    "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED"})
"""Slurm job states of a job that is not over (squeue(1), JOB STATE CODES)."""
GONE_POLLS = 12
"""Polls in a row after which a job the scheduler no longer lists is taken as over."""


@config
class SlurmOptions(Config):
    partition: str | None = None
    """The partition (None: the cluster's default)."""
    time_min: int = 60
    """Time limit per job, minutes; a run that needs longer checkpoints and requeues at the limit."""
    nodes: int = 1
    """Nodes per job."""
    gpus_per_node: int = 0
    """GPUs per node; each gets its own task (a DDP rank)."""
    cpus_per_task: int | None = None
    """CPUs per task (None: the cluster's default); also the run's torch threads."""
    mem_gb: float | None = None
    """Memory per node, GB (None: the cluster's default)."""
    signal_delay_s: int = 120
    """Seconds before the time limit at which Slurm sends SIGUSR1 (the run checkpoints and requeues)."""
    setup: list[str] | None = None
    """Shell lines run in the job before the run (e.g. `module load ...`)."""

    @property
    def tasks_per_node(self) -> int:
        return max(1, self.gpus_per_node)

    def __post_init__(self) -> None:
        for name in ("time_min", "nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_min', '').replace('_', '-')}", f"must be at least 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0:
            raise ConfigError("--gpus-per-node", f"must be at least 0, got {self.gpus_per_node}")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise ConfigError("--cpus-per-task", f"must be at least 1, got {self.cpus_per_task}")


class SweepJob:
    """What one Slurm job runs: run `key` of the sweep at `path` (a submitit Checkpointable, pickled)."""

    def __init__(self, path: str, key: str, *, retry_failed: bool = False, threads: int | None = None):
        self.path, self.key, self.retry_failed, self.threads = path, key, retry_failed, threads

    def __call__(self) -> dict[str, Any]:
        import os

        import submitit

        from isoflop.sweep.run_one import run_planned
        from isoflop.train.step import Preempted

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # one task per GPU: torch.distributed's env:// from Slurm's variables
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        if self.threads:
            import torch

            os.environ["OMP_NUM_THREADS"] = str(self.threads)
            torch.set_num_threads(self.threads)
        try:
            record = run_planned(SweepDir(self.path), self.key, retry_failed=self.retry_failed, stream=sys.stderr)
        except Preempted as e:
            print(f"isoflop: {self.key}: {e}", file=sys.stderr)
            if env.global_rank == 0:
                _requeue(env.job_id)
            # SystemExit, not an exception: submitit then writes no result, and the requeued job runs again
            raise SystemExit(EXIT_PREEMPTED) from None
        return record.to_dict()

    def checkpoint(self) -> Any:
        """submitit's timeout path (its USR2): resubmit the same call; the run resumes from its checkpoint."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


def _requeue(job_id: str) -> None:
    try:
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60, capture_output=True)
        print(f"isoflop: requeued job {job_id}", file=sys.stderr)
    except (OSError, subprocess.SubprocessError) as e:  # the run is checkpointed: `sweep run` resumes it
        print(f"isoflop: could not requeue job {job_id}: {e}", file=sys.stderr)


# ---------------------------------------------------------------------- the scheduler's view
def slurm_available() -> str | None:
    """None when the Slurm client commands are here, else why not."""
    missing = [c for c in ("sbatch", "srun", "scontrol") if shutil.which(c) is None]
    return f"no Slurm client here ({', '.join(missing)} not found)" if missing else None


def query_states(job_ids: list[str]) -> tuple[dict[str, str], str]:
    """job id -> Slurm state for the ids the scheduler knows, and where the states came from."""
    if not job_ids:
        return {}, "no jobs"
    why = slurm_available()
    if why:
        return {}, why
    states: dict[str, str] = {}
    source = "scontrol"
    try:  # sacct answers only where accounting storage (slurmdbd) is set up
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            for line in out.stdout.splitlines():
                job, _, state = line.partition("|")
                if job in job_ids and state:
                    states[job] = state.split()[0]  # "CANCELLED by 0" -> CANCELLED
    except (OSError, subprocess.SubprocessError):
        pass
    if len(states) == len(job_ids):
        return states, "sacct"
    if states:
        source = "sacct+scontrol"
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return states, f"scontrol failed ({e})"
    if out.returncode != 0:
        return states, f"scontrol failed: {out.stderr.strip()}"
    for line in out.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        job = fields.get("JobId")
        if job in job_ids and job not in states:
            states[job] = fields.get("JobState", "UNKNOWN")
    return states, source


def job_states(sweep: SweepDir) -> tuple[dict[str, tuple[str, str | None]], str]:
    """key -> (its latest job id, that job's state or None when the scheduler no longer knows it)."""
    latest = {key: ids[-1] for key, ids in sweep.read_jobs().items() if ids}
    states, source = query_states(sorted(set(latest.values())))
    return {key: (job, states.get(job)) for key, job in latest.items()}, source


def active_jobs(sweep: SweepDir) -> dict[str, tuple[str, str]]:
    """key -> (job id, state) for the runs whose latest Slurm job is not over (an executor leaves them alone)."""
    if not sweep.jobs_file.is_file():
        return {}
    jobs, _ = job_states(sweep)
    return {key: (job, state) for key, (job, state) in jobs.items() if state in ACTIVE}


# ---------------------------------------------------------------------- the driver
def run_slurm(sweep: SweepDir, options: SlurmOptions, *, retry_failed: bool = False, only: list[str] | None = None,
              wait: bool = True, say: Callable[[str], None] = lambda _line: None, poll_s: float = 5.0,
              progress_every_s: float = 60.0) -> SweepSummary:
    """Submit a job for every selected run that is not done, failed before or already queued; with `wait`,
    follow them to the end (progress lines), else return once they are submitted."""
    why = slurm_available()
    if why:
        raise ConfigError("--executor slurm", why)
    sweep.require_sweep()
    with SweepLock(sweep.lock_file):
        return _SlurmDriver(sweep, options, retry_failed=retry_failed, only=only, say=say, poll_s=poll_s,
                            progress_every_s=progress_every_s).run(wait)


class _SlurmDriver:
    def __init__(self, sweep: SweepDir, options: SlurmOptions, *, retry_failed: bool, only: list[str] | None,
                 say: Callable[[str], None], poll_s: float, progress_every_s: float):
        self.sweep, self.options, self.retry_failed, self.say = sweep, options, retry_failed, say
        self.poll_s, self.progress_every_s = poll_s, progress_every_s
        self.plan = sweep.read_plan()
        self.selected = select_runs(self.plan, only)
        self.summary = SweepSummary()
        self.submitted: dict[str, str] = {}  # key -> job id

    def run(self, wait: bool) -> SweepSummary:
        start = time.perf_counter()
        try:
            self._submit_all()
            if wait and self.submitted:
                self._follow()
        except KeyboardInterrupt:
            self.say("interrupted: the jobs keep running in Slurm; `isoflop sweep status` follows them")
        self.summary.wall_s = time.perf_counter() - start
        return self.summary

    def _executor(self) -> Any:
        import submitit

        o = self.options
        executor = submitit.SlurmExecutor(folder=self.sweep.slurm_dir / "%j", max_num_timeout=3)
        params: dict[str, Any] = dict(time=o.time_min, nodes=o.nodes, ntasks_per_node=o.tasks_per_node,
                                      signal_delay_s=o.signal_delay_s,
                                      # srun truncates its --output/--error files: keep every attempt's
                                      srun_args=["--open-mode=append"],
                                      additional_parameters={"requeue": True, "signal": f"USR1@{o.signal_delay_s}"})
        for name, value in (("partition", o.partition), ("cpus_per_task", o.cpus_per_task),
                            ("gpus_per_node", o.gpus_per_node or None),
                            ("mem", f"{o.mem_gb:g}GB" if o.mem_gb else None), ("setup", o.setup)):
            if value is not None:
                params[name] = value
        executor.update_parameters(**params)
        return executor

    def _submit_all(self) -> None:
        active = active_jobs(self.sweep)
        executor = self._executor()
        for planned, prep in not_done(self.sweep, self.plan, self.selected, self.summary, self.say):
            key = planned.key
            if key in active:
                job, state = active[key]
                self.summary.elsewhere[key] = f"Slurm job {job} {state}"
                self.submitted[key] = job  # followed like the ones submitted now
                self.say(f"queued {key}: already Slurm job {job} ({state})")
                continue
            failure = read_failure(prep.run)
            if failure is not None and not self.retry_failed:
                self.summary.failed_before[key] = failure.get("reason", "?")
                continue
            dependency = None
            point = planned.init_from
            if point is not None and not prep.run.checkpoint_steps() and not trunk_checkpoint_ready(self.sweep, point):
                trunk_job = self.submitted.get(point.key)
                if trunk_job is None:
                    self.summary.blocked[key] = (f"waits for checkpoint {point.step} of {point.key}, which is neither "
                                                 "there nor queued")
                    self.say(f"block {key}: {self.summary.blocked[key]}")
                    continue
                dependency = f"afterok:{trunk_job}"
            executor.update_parameters(job_name=f"isoflop-{key}", dependency=dependency)
            threads = self.options.cpus_per_task
            job = executor.submit(SweepJob(str(self.sweep.path.resolve()), key, retry_failed=self.retry_failed,
                                           threads=threads))
            self.sweep.add_job(key, job.job_id)
            self.submitted[key] = self.summary.submitted[key] = job.job_id
            after = f" after job {dependency.split(':')[1]}" if dependency else ""
            self.say(f"submit {key}: job {job.job_id}{after} ({planned.role}, {planned.steps} steps)")

    def _follow(self) -> None:
        """Poll the scheduler and the folder until every submitted run's job is over."""
        pending = dict(self.submitted)
        unseen: dict[str, int] = {}  # job -> polls in a row the scheduler did not list it
        last_progress = time.perf_counter()
        while pending:
            states, _ = query_states(sorted(set(pending.values())))
            for key, job in list(pending.items()):
                run = self.sweep.run_dir(key)
                state = states.get(job)
                if state in ACTIVE:
                    continue
                if run.is_complete():
                    record = run.read_record()
                    self.summary.trained[key] = {"val_loss": record.val_loss, "steps": record.steps,
                                                 "time_s": record.wall_time_s}
                    self.say(f"done  {key}: val_loss {record.val_loss:.4f}, {record.steps} steps, "
                             f"{record.wall_time_s:.1f} s training (job {job})")
                    self.summary.elsewhere.pop(key, None)  # a job found queued, followed to its end
                    del pending[key]
                elif state is not None or self._gone(job, unseen):
                    self.summary.elsewhere.pop(key, None)
                    self._ended_without_record(key, job, state)
                    del pending[key]
            if pending and time.perf_counter() - last_progress >= self.progress_every_s:
                self._progress(pending, states)
                last_progress = time.perf_counter()
            if pending:
                time.sleep(self.poll_s)

    def _gone(self, job: str, unseen: dict[str, int]) -> bool:
        """A job the scheduler does not list (accounting off and the job purged, or a hiccup): over once
        submitit's result file is there, or after GONE_POLLS polls in a row."""
        import submitit

        unseen[job] = unseen.get(job, 0) + 1
        done = submitit.SlurmJob(folder=self.sweep.slurm_dir / "%j", job_id=job).paths.result_pickle.exists()
        return done or unseen[job] >= GONE_POLLS

    def _ended_without_record(self, key: str, job: str, state: str | None) -> None:
        run = self.sweep.run_dir(key)
        if state == "PREEMPTED":
            self.summary.stopped.append(key)
            self.say(f"stop  {key}: job {job} preempted and not requeued; the next `sweep run` resumes it")
            return
        planned = self.plan.run(key)
        if state == "CANCELLED" and planned.init_from is not None and planned.init_from.key in self.summary.failed:
            self.summary.blocked[key] = f"its trunk {planned.init_from.key} failed (job {job} cancelled)"
            return
        failure = read_failure(run)
        reason = failure["reason"] if failure else self._job_error(job) or f"job {job} ended {state or 'unknown'}"
        if failure is None:
            from isoflop.sweep.status import last_train_record

            last = last_train_record(run)
            run.write_failure(reason, last.get("step") if last else None)
        self.summary.failed[key] = reason
        self.say(f"FAIL  {key}: {reason} (job {job}: {self.sweep.slurm_dir / job})")
        for other in self.plan.runs:  # forks waiting on this trunk can never start: cancel their jobs
            if other.init_from is not None and other.init_from.key == key and other.key in self.submitted:
                subprocess.run(["scancel", self.submitted[other.key]], capture_output=True, timeout=30)

    def _job_error(self, job: str) -> str | None:
        """The last line of the job's error: submitit's pickled traceback, else its stderr."""
        import submitit

        handle = submitit.SlurmJob(folder=self.sweep.slurm_dir / "%j", job_id=job)
        text = ""
        try:
            if handle.paths.result_pickle.exists():
                outcome, payload = submitit.core.utils.pickle_load(handle.paths.result_pickle)
                text = payload if outcome == "error" else ""
            elif handle.paths.stderr.exists():
                text = handle.paths.stderr.read_text(errors="replace")
        except Exception:  # an unreadable result is no reason: the state says the rest
            return None
        lines = [line.strip() for line in str(text).splitlines() if line.strip()]
        return lines[-1] if lines else None

    def _progress(self, pending: dict[str, str], states: dict[str, str]) -> None:
        from isoflop.sweep.status import last_train_record

        for key, job in pending.items():
            record = last_train_record(self.sweep.run_dir(key))
            where = f"step {record['step']}/{self.plan.run(key).steps}, loss {record['loss']:.4f}" if record else "-"
            self.say(f"  ... {key}: job {job} {states.get(job, '?')}, {where}")
