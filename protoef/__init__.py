"""ProtoEFNet companion: interpretable, prototype-based ejection-fraction estimation
from echocardiography videos (data, model, losses, metrics, training, explanations)."""
__version__ = "0.1.0"

# Before anything imports torch's kernels: the pinned numerical environment, so every entry
# point (CLI, notebooks, tests, scripts) gives the same numbers on every x86-64 CPU
# (protoef.numerics; PROTOEF_NUMERICS=native opts out).
from protoef import numerics

numerics.pin_environment()
