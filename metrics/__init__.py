"""Classification metrics on integer labels and logits."""
from metrics.accuracy import ConfusionMeter, confusion_matrix, per_class_accuracy, topk_accuracy
from metrics.groups import group_accuracies, worst_group_accuracy

__all__ = ["ConfusionMeter", "confusion_matrix", "per_class_accuracy", "topk_accuracy",
           "group_accuracies", "worst_group_accuracy"]
