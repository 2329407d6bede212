"""One module per command group; cli.main assembles them."""
