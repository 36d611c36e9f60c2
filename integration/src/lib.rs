//! The suite: many backplane nodes against one emulator, random histories, faults (SIGKILL,
//! restarts), Socket.IO across servers, the chat page in a real browser, and real
//! third-party clients (`compat/`). Its harness lives in `testkit`; the chat app in `demo`.
//! [`sio`] drives the official `socket.io-client` (Node.js) for the Socket.IO tests.

pub mod sio;
