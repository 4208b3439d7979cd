//! A publisher that publishes on `t.x` at a steady pace while the test watches
//! the events.

use std::time::Duration;

use macula::node::Event;
use macula::pubsub::Topic;
use macula::sim::{HostEvent, HostId, Mesh};

/// `publisher` publishes on `t.x` every 200 ms for `secs` seconds, handing every
/// event of the mesh to `watch` as it comes.
pub fn publish_for(
    mesh: &mut Mesh,
    publisher: HostId,
    secs: u32,
    mut watch: impl FnMut(HostEvent<Event>),
) {
    let topic = Topic::new("t.x").expect("a valid topic");
    for n in 0..secs * 5 {
        mesh.publish(publisher, &topic, n.to_be_bytes().to_vec());
        mesh.world.run_for(Duration::from_millis(200));
        mesh.world.take_events().into_iter().for_each(&mut watch);
    }
}
