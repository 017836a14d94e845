"""A client that makes agents trade by their strategy, through the public API only.

It runs anywhere (``manage.py run_agents --url ... --token ...``) and reaches the server the
way any external program does: REST for orders (``agent_runner.client``) and the WebSocket
for prices and its agents' events (``agent_runner.stream``). It imports no server code; the
decisions come from ``strategies``. ``agent_runner.runner`` ties them together.
"""
