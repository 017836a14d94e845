from channels.auth import AuthMiddlewareStack

TokenAuthMiddlewareStack = AuthMiddlewareStack
