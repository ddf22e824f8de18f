// Preload (`node -r ./loopback.cjs ...`) that makes every TCP server of the process listen on
// 127.0.0.1 only, whatever host (or none) the program asked for. Used for MCP servers that bind
// all interfaces: tests and the demo must stay on loopback.
'use strict';
const net = require('node:net');

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  if (typeof args[0] === 'object' && args[0] !== null && !Array.isArray(args[0])) {
    if (args[0].path === undefined) args[0] = { ...args[0], host: '127.0.0.1' };
  } else if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    const port = Number(args[0]);
    const rest = args.slice(1);
    if (typeof rest[0] === 'string') rest.shift();
    args = [port, '127.0.0.1', ...rest];
  }
  return listen.apply(this, args);
};
