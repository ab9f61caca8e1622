"""Export a trained student for the robot: fuse the adapters (merge), convert to GGUF and quantize (gguf, or
docker for llama.cpp's own tools in a container), write the Ollama Modelfile (modelfile), check the quantized
model against the MLX student (gate)."""
