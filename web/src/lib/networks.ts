// Network objects as the console shows them, and the security group rule
// form's body.
import type { Port, SecurityGroupRule } from '../types';

// netKey is an object's key, "<project>/<name>".
export function netKey(o: { name: string; project?: string }): string {
  return `${o.project ?? ''}/${o.name}`;
}

export function portIPs(p: Port): string[] {
  return (p.spec.fixedIPs ?? []).map((f) => f.ip);
}

// ruleText says a rule in a line: "ingress tcp 22 from 10.0.0.0/8".
export function ruleText(r: SecurityGroupRule): string {
  const proto = r.protocol && r.protocol !== 'any' ? r.protocol : 'any protocol';
  let ports = '';
  if (r.portMin) ports = r.portMax && r.portMax !== r.portMin ? ` ${r.portMin}-${r.portMax}` : ` ${r.portMin}`;
  const dir = r.direction === 'egress' ? 'to' : 'from';
  const remote = r.remoteGroup ? `group ${r.remoteGroup}` : r.remoteCIDR || 'anywhere';
  return `${r.direction} ${r.etherType === 'IPv6' ? 'IPv6 ' : ''}${proto}${ports} ${dir} ${remote}`;
}

export interface RuleForm {
  direction: string;
  protocol: string;
  ports: string; // "22", "8000-8100" or blank
  remoteCIDR: string;
  remoteGroup: string;
}

export const emptyRule: RuleForm = { direction: 'ingress', protocol: 'tcp', ports: '', remoteCIDR: '', remoteGroup: '' };

// ruleBody is the rule the form asks for. What does not parse goes as it
// is (a port of NaN goes as -1), for the server to name the bad field.
export function ruleBody(f: RuleForm): SecurityGroupRule {
  const r: SecurityGroupRule = { direction: f.direction };
  if (f.protocol && f.protocol !== 'any') r.protocol = f.protocol;
  const ports = f.ports.trim();
  if (ports) {
    const [a, b] = ports.split('-', 2).map((x) => x.trim());
    const num = (x: string) => (/^\d+$/.test(x) ? Number(x) : -1);
    r.portMin = num(a);
    r.portMax = b === undefined ? r.portMin : num(b);
  }
  if (f.remoteCIDR.trim()) {
    r.remoteCIDR = f.remoteCIDR.trim();
    if (r.remoteCIDR.includes(':')) r.etherType = 'IPv6';
  }
  if (f.remoteGroup) r.remoteGroup = f.remoteGroup;
  return r;
}
