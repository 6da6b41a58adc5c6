"""ProtoEFNet companion: interpretable, prototype-based ejection-fraction estimation
from echocardiography videos (data, model, losses, metrics, training, explanations)."""
__version__ = "0.1.0"
