"""Dynamic SplitFuse scheduling: which tokens of which sequences go into the next forward pass."""
from mii_core.scheduler.sequence import Sequence, SequenceStatus
from mii_core.scheduler.splitfuse import Scheduler, StepPlan

__all__ = ["Sequence", "SequenceStatus", "Scheduler", "StepPlan"]
