"""Training engine: the trainer loop, checkpoints, distributed helpers and the resource meter."""
