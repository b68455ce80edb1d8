//! Load generator and model-server simulator.

pub mod sim;
