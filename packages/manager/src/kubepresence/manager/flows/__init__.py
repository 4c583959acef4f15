"""The manager's flow shells: tunnels that wait for a dial's answer and are spliced.

Plain types only (the servicer, rpc.manager, translates the wire): a tunnel is any
stream with `send_message`/`recv_message` (`splicing.Pipe`), a flow's connection is
passed on in its wire encoding unread (`bytes`). See the kubepresence.protocol docstring for
the words (flow, tunnel, dial, hand-over).

- `splicing`: a waiting tunnel's rendezvous with the tunnel that answers its dial.
- `handovers`: agents' HandOver tunnels waiting for the intercept's client to answer.
- `egress`: clients' DialCluster tunnels via a workload, waiting for an agent to answer.
"""
