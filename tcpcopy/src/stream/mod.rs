//! Stream mode: reassemble captured client streams and replay them over kernel TCP sockets.
