"""The web side of an iteration: search engines, the downloader and its guards."""
