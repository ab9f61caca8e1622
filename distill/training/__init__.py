"""Stage 2, training: datasets and splits, mlx-lm LoRA training (train), constrained MLX decoding (mlx_decode),
evaluation and the regression gates (evaluate), the confidence threshold (calibrate), style evaluation."""
