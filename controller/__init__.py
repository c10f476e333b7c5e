"""lblab's OpenFlow controller side: pure flow logic plus thin Ryu/os-ken glue."""
