"""Recording a traced block into an intervention graph: proxies, module envoys, contexts and shape checks."""
