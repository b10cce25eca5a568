"""Image classification as a task: use a trained classifier (val, predict) from its checkpoint alone.

``leanvision train`` (still ``classify/train.py``; it moves here as ``classify/train.py``) writes the checkpoints;
:func:`load_classifier` turns one into a plain :class:`Classifier` (images in [0, 1] -> logits).
"""

from .model import Classifier, load_classifier

__all__ = ["Classifier", "load_classifier"]
