"""Model families (plain PyTorch, stateless modules) and checkpoint loading."""
