from tests.support.export import lora_adapter, merged_student, tiny_llama_dir  # noqa: F401
