"""lblab's composition layer: a live network assembled from the parts below it.

topologies/ plans the network (scenario, addresses, Mininet Topo, OVS, relays), controller/
computes the switches' flows and runs the OpenFlow apps, gslb/ answers DNS; lab/ puts them
together on one machine (LiveNet and its calibration, the GRE underlay, the adapters that
turn a plan into the VIP app's and the authority's configs, DNS services in hosts, the
minimal benchmark nets). experiments/ measures through it.
"""
