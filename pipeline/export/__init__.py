"""A run folder as a dataset: the layouts, the Hugging Face dataset and Parquet files, and the dataset card."""
