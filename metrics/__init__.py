"""Classification metrics on integer labels and logits."""
from metrics.accuracy import ConfusionMeter, confusion_matrix, per_class_accuracy, topk_accuracy

__all__ = ["ConfusionMeter", "confusion_matrix", "per_class_accuracy", "topk_accuracy"]
