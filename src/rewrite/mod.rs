//! Header rewriting (tcprewrite's edits): CIDR and port maps, MAC, VLAN, TTL/TOS, MTU truncation,
//! Linux-cooked to Ethernet, TSO splitting, checksum fixing.
//!
//! Rules are compiled once from plain values and applied in place; no allocation per packet.
