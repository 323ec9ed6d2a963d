import net from 'node:net';
export const s = net.connect(80, 'example.com');
