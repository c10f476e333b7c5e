"""lblab's global DNS load balancer: an authoritative server for the scenario zone whose
answers follow the client's location (EDNS Client Subnet), DC health and DC capacity."""
