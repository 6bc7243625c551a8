//! The pacing schedule: when each packet is due, from capture timing, a multiplier, a packet rate
//! or a bit rate. Time is passed in; this module never reads a clock.
