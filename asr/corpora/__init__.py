"""One module per corpus: `download_<name>()` fetches, `prepare_<name>()` writes manifests."""
