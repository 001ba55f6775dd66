"""Classification probes on frozen or finetuned backbones: data, features, linear/kNN/few-shot probes, metrics."""
