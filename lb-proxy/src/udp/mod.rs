//! UDP forwarding (todo)
