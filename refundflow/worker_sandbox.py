"""The workflow sandbox every worker and replayer runs workflows in, made cheap per run.

The sandbox re-imports the workflow's own modules for every run it starts (so one run cannot
leak state into another, and so it can check what they touch) and enters itself for every
activation and every payload it encodes or decodes. What it re-did each time with the same
result each time is done once per process here, with the same restrictions and checks:

- modules that hold no workflow code (pure rules, contracts, models) are passed through;
- the workflow modules are compiled once: every run executes the same code objects in fresh
  module namespaces (a run's sandbox took 18 ms of CPU to start from sources without
  bytecode files, as in a checkout with PYTHONDONTWRITEBYTECODE, 7 ms from installed bytecode
  files; 4 ms now);
- the lines the SDK executes to enter the sandbox are compiled once, not per activation;
- the serialization context of each payload is looked up without entering the sandbox.

Replaying the committed histories took 83 ms of CPU per run before, 45 ms after (33 ms with no
sandbox at all): ``python -m bench.tools.replay_cost``.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
import time
from collections.abc import Sequence
from types import CodeType, ModuleType
from typing import Any, ClassVar, cast

from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.common import MetricHistogramFloat, MetricMeter
from temporalio.converter import SerializationContext
from temporalio.converter._extstore import StorageDriverStoreContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox._in_sandbox import InSandbox
from temporalio.worker.workflow_sandbox._runner import _Instance

# Pure modules loaded once and shared by every workflow run instead of being re-imported into
# each sandbox (measured: ~35x the time and ~7x the memory otherwise). The activity modules are
# here because the run names their activities by method reference; their code never runs in a
# workflow. The workflow's own modules stay sandboxed: the sandbox checks them.
PASSTHROUGH = (
    "refundflow.domain",
    "refundflow.activities",
    "refundflow.gateways",
    "refundflow.db",
    "refundflow.notify",
    "refundflow.settings",
    "refundflow.workflows.search_attributes",
    # Creates the schedules from the client side; the schedule workflows import it.
    "refundflow.workflows.schedules",
    "pydantic",
    "pydantic_core",
    "babel",
    "holidays",
    "iso4217",
    "yaml",
    "opentelemetry",
)


class _CompiledOnceLoader(importlib.machinery.SourceFileLoader):
    """Loads a module from its file as Python does, but compiles the file only the first time
    this process loads it; later imports (a new sandbox) execute the same code object. A file
    changed under a running worker is not picked up: the worker runs one build."""

    _code: ClassVar[dict[str, CodeType]] = {}
    """By file path. Two threads loading a module at once both compile it: the same code."""

    def get_code(self, fullname: str) -> CodeType | None:
        code = self._code.get(self.path)
        if code is None:
            code = super().get_code(fullname)
            if code is not None:
                self._code[self.path] = code
        return code


class _CompiledOnceFinder(importlib.abc.MetaPathFinder):
    """Finds the modules the sandbox re-imports (refundflow's, except those passed through)
    as the other finders do, and loads them with :class:`_CompiledOnceLoader`. Each import gets
    a spec of its own (the import system writes to it), made from the first one found."""

    def __init__(self) -> None:
        self._found: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not _reimported(fullname):
            return None
        first = self._found.get(fullname) or self._find(fullname, path, target)
        if first is None:
            return None
        assert first.origin is not None
        spec = importlib.machinery.ModuleSpec(
            fullname,
            _CompiledOnceLoader(fullname, first.origin),
            origin=first.origin,
            is_package=first.submodule_search_locations is not None,
        )
        if first.submodule_search_locations is not None:
            spec.submodule_search_locations = list(first.submodule_search_locations)
        spec.cached = first.cached
        spec.has_location = True
        return spec

    def _find(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None
    ) -> importlib.machinery.ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            found = finder.find_spec(fullname, path, target)
            if found is None:
                continue
            if not isinstance(found.loader, importlib.machinery.SourceFileLoader):
                return None  # not a source file (a test's own loader): loaded as it says
            self._found[fullname] = found
            return found
        return None


@functools.lru_cache(maxsize=4096)
def _reimported(name: str) -> bool:
    # Asked for every import a new sandbox makes (modules of the run's own are not in its
    # sys.modules yet): the answer per name never changes.
    return name.partition(".")[0] == "refundflow" and not any(
        name == module or name.startswith(module + ".") for module in PASSTHROUGH
    )


_FINDER = _CompiledOnceFinder()


@functools.lru_cache(maxsize=64)
def _compiled(source: str) -> CodeType:
    # The SDK enters the sandbox with a few fixed lines of source; "<string>" as exec names them.
    return compile(source, "<string>", "exec")


class _CheapInstance(_Instance):
    """The SDK's sandboxed run, cheaper to enter: the code it executes to enter the sandbox
    (per activation) is compiled once, and the lookups made for every payload it encodes or
    decodes do not enter it at all. Those only read the SDK's own table of the run's pending
    commands; no code of the workflow runs in them, so the sandbox has nothing to guard there."""

    cpu: MetricHistogramFloat | None = None
    """Where each activation's CPU time goes (milliseconds), when the worker exports metrics."""
    cpu_to_add_ms = 0.0
    """The sandbox's creation, counted with the run's first activation (the same task)."""

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        if self.cpu is None:
            return super().activate(act)
        # CPU of this thread only: the time it waits for the GIL or the event loop is not
        # counted, so the figure is the run's own work whatever else the worker is doing.
        start = time.thread_time()
        try:
            return super().activate(act)
        finally:
            spent_ms = (time.thread_time() - start) * 1000 + self.cpu_to_add_ms
            self.cpu_to_add_ms = 0.0
            self.cpu.record(spent_ms)

    def _run_code(self, code: str, **extra_globals: Any) -> None:
        super()._run_code(_compiled(code), **extra_globals)  # type: ignore[arg-type]

    def get_serialization_context(
        self, command_info: CommandInfo | None
    ) -> SerializationContext | None:
        return self._in_sandbox().get_serialization_context(command_info)

    def get_external_store_context(
        self, command_info: CommandInfo | None
    ) -> StorageDriverStoreContext:
        return self._in_sandbox().get_external_store_context(command_info)

    def _in_sandbox(self) -> InSandbox:
        return cast(InSandbox, self.globals_and_locals["__temporal_in_sandbox"])


ACTIVATION_CPU = "refundflow_workflow_activation_cpu"
"""The histogram of each workflow activation's CPU time in the worker (ms): the workflow code
of one activation, with the sandbox's creation in a run's first. The SDK's deadlock check
("didn't yield within 2 seconds") is per activation too."""
ACTIVATION_CPU_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class RefundflowSandboxRunner(SandboxedWorkflowRunner):
    """The SDK's sandbox with the same restrictions and checks; only cheaper to enter."""

    def __init__(
        self, *, restrictions: SandboxRestrictions, cpu: MetricHistogramFloat | None = None
    ) -> None:
        super().__init__(restrictions=restrictions)
        self.cpu = cpu

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        start = time.thread_time()
        instance = _CheapInstance(det, self.runner_class, self.restrictions)
        if self.cpu is not None:
            instance.cpu = self.cpu
            instance.cpu_to_add_ms = (time.thread_time() - start) * 1000
        return instance


def workflow_runner(meter: MetricMeter | None = None) -> SandboxedWorkflowRunner:
    """The sandbox for workers and replayers (installs the compile-once import of refundflow's
    modules in this process, once). With ``meter`` it records :data:`ACTIVATION_CPU`."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    cpu = None
    if meter is not None:
        cpu = meter.create_histogram_float(
            ACTIVATION_CPU, "CPU time of one workflow activation in the worker", "ms"
        )
    return RefundflowSandboxRunner(restrictions=restrictions, cpu=cpu)
