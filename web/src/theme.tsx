// The theme: the user's last choice (localStorage), else the system's.
import { useEffect, useState } from 'react';
import { otherTheme, pickTheme, themeKey, type Theme } from './lib/theme';

const darkQuery = () => matchMedia('(prefers-color-scheme: dark)');

function current(): Theme {
  return pickTheme(localStorage.getItem(themeKey), darkQuery().matches);
}

export function applyTheme(t: Theme = current()) {
  document.documentElement.dataset.theme = t;
}

export function useTheme(): [Theme, () => void] {
  const [theme, setTheme] = useState<Theme>(current);
  useEffect(() => applyTheme(theme), [theme]);
  useEffect(() => {
    // Without a stored choice, follow the system as it changes.
    const mq = darkQuery();
    const on = () => {
      if (!localStorage.getItem(themeKey)) setTheme(current());
    };
    mq.addEventListener('change', on);
    return () => mq.removeEventListener('change', on);
  }, []);
  const toggle = () => {
    const t = otherTheme(theme);
    localStorage.setItem(themeKey, t);
    setTheme(t);
  };
  return [theme, toggle];
}

export function ThemeToggle() {
  const [theme, toggle] = useTheme();
  const next = otherTheme(theme);
  return (
    <button type="button" data-testid="theme-toggle" onClick={toggle} aria-label={`Switch to the ${next} theme`} title={`Switch to the ${next} theme`}>
      <span aria-hidden="true">{theme === 'dark' ? '☀' : '☾'}</span>
    </button>
  );
}
