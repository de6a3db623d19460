"""The `squall` client commands: OpenWhisk's `wsk` grammar over the REST API, plus tail, trace and deploy."""
