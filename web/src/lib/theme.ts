// Light or dark: what the user chose last, else what the system prefers.
export type Theme = 'light' | 'dark';

export const themeKey = 'polyvisor.theme';

export function pickTheme(stored: string | null, prefersDark: boolean): Theme {
  if (stored === 'light' || stored === 'dark') return stored;
  return prefersDark ? 'dark' : 'light';
}

export function otherTheme(t: Theme): Theme {
  return t === 'dark' ? 'light' : 'dark';
}
