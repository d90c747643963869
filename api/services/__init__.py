"""Business logic behind the routes: routes stay short and call these."""
