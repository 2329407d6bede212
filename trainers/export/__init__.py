"""Task type `export`: packages a finished task's model for download, merging a LoRA adapter into its base."""
