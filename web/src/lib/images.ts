// The images a project sees: its own, and the public ones of any project
// (which its VMs may use too), marked as such.
export interface ImageLike {
  name: string;
  project?: string;
  kind: string;
  state: string;
  public?: boolean;
}

export type Owner = 'own' | 'public' | 'other';

// owner tells how an image relates to the project looking at it.
export function owner(img: ImageLike, project: string): Owner {
  if ((img.project ?? '') === project) return 'own';
  return img.public ? 'public' : 'other';
}

// visibleImages keeps what a project's list shows (its own and public
// ones: an all-projects list may hold others) and sorts them: own first,
// then by kind and name.
export function visibleImages<T extends ImageLike>(imgs: T[], project: string, q = ''): T[] {
  const t = q.trim().toLowerCase();
  const rank: Record<Owner, number> = { own: 0, public: 1, other: 2 };
  return imgs
    .filter((i) => owner(i, project) !== 'other' && (!t || i.name.toLowerCase().includes(t) || (i.project ?? '').toLowerCase().includes(t)))
    .sort((a, b) => rank[owner(a, project)] - rank[owner(b, project)] || a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name) || (a.project ?? '').localeCompare(b.project ?? ''));
}

// imageKey identifies an image across projects ("project/name").
export function imageKey(img: { name: string; project?: string }): string {
  return `${img.project ?? ''}/${img.name}`;
}

// nameFromFile proposes an image name for an uploaded file: its base
// name, lowercased, with what a name may not hold turned into '-'.
export function nameFromFile(file: string): string {
  const base = file.replace(/^.*[\\/]/, '').replace(/\.(qcow2|img|raw|vmdk|vhdx?|vdi|iso|gz|xz)$/gi, '');
  return base
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
}

// kindFromFile guesses what an uploaded file is from its name.
export function kindFromFile(file: string): 'disk' | 'kernel' | 'initrd' {
  const b = file.replace(/^.*[\\/]/, '').toLowerCase();
  if (/^(vmlinu[xz]|bzimage|kernel)/.test(b)) return 'kernel';
  if (/^(initrd|initramfs)/.test(b)) return 'initrd';
  return 'disk';
}
