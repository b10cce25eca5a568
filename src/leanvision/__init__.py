"""leanvision: train vision models with less memory, fewer trainable parameters and less time than
end-to-end backpropagation (DGL, InfoPro, MLAAN; Replacement Learning), and detect hazards on
construction sites (YOLOv8, GSO-YOLO)."""

__version__ = "0.1.0"
