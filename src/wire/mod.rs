//! Packet views over borrowed bytes (Ethernet, 802.1Q, Linux cooked, IPv4 incl. fragments, IPv6,
//! TCP, UDP, ICMP) and checksums (full and RFC 1624 incremental).
//!
//! Views check lengths once in `new_checked`; no accessor can panic afterwards. This module never
//! logs and never performs I/O.
