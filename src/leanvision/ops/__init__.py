"""The bottom layer: tensor-level helpers that know no model, method or task.

- :mod:`.boxes`: box geometry (IoU family and its losses, anchors, DFL distances);
- :mod:`.counting`: parameter and FLOP counts of any module.

Everything above (models, methods, engine, tasks) may import from here; nothing here imports from them.
"""
